package ec2test_test

import (
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/smithy-go"
	"go.uber.org/goleak"

	"github.com/molecule-ai/molecule-agent/controlplane/provision/ec2test"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func client(t *testing.T, s *ec2test.Server, creds aws.CredentialsProvider) *ec2.Client {
	t.Helper()
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	return ec2.New(ec2.Options{
		Region: ec2test.Region, BaseEndpoint: aws.String(s.URL), Credentials: creds,
		HTTPClient: &http.Client{Transport: tr}, RetryMaxAttempts: 1,
	})
}

func code(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}

func launchInput(token string) *ec2.RunInstancesInput {
	return &ec2.RunInstancesInput{
		ImageId: aws.String("ami-0123456789abcdef0"), InstanceType: types.InstanceTypeT3Small,
		MinCount: aws.Int32(1), MaxCount: aws.Int32(1), ClientToken: aws.String(token),
		IamInstanceProfile: &types.IamInstanceProfileSpecification{Name: aws.String("molecule-tenant")},
		MetadataOptions: &types.InstanceMetadataOptionsRequest{
			HttpTokens: types.HttpTokensStateRequired, HttpPutResponseHopLimit: aws.Int32(2),
			HttpEndpoint: types.InstanceMetadataEndpointStateEnabled, InstanceMetadataTags: types.InstanceMetadataTagsStateEnabled,
		},
		NetworkInterfaces: []types.InstanceNetworkInterfaceSpecification{{
			DeviceIndex: aws.Int32(0), SubnetId: aws.String("subnet-private1"), AssociatePublicIpAddress: aws.Bool(false),
			Groups: []string{"sg-1"},
		}},
		UserData: aws.String("IyEvYmluL3NoCmV4ZWMgdHJ1ZQo="),
		TagSpecifications: []types.TagSpecification{{ResourceType: types.ResourceTypeInstance, Tags: []types.Tag{
			{Key: aws.String("molecule:org"), Value: aws.String("acme")}, {Key: aws.String("molecule:role"), Value: aws.String("tenant")},
		}}},
	}
}

func TestRunInstancesRecordsTheLaunch(t *testing.T) {
	t.Parallel()
	s := ec2test.New(t)
	c := client(t, s, s.Credentials())
	out, err := c.RunInstances(t.Context(), launchInput("tok-1"))
	if err != nil {
		t.Fatal(err)
	}
	if len(out.Instances) != 1 || out.Instances[0].State.Name != types.InstanceStateNamePending {
		t.Fatalf("instances = %+v, want one pending", out.Instances)
	}
	in := out.Instances[0]
	if in.MetadataOptions.HttpTokens != types.HttpTokensStateRequired || aws.ToInt32(in.MetadataOptions.HttpPutResponseHopLimit) != 2 ||
		in.MetadataOptions.InstanceMetadataTags != types.InstanceMetadataTagsStateEnabled {
		t.Errorf("metadata options = %+v", in.MetadataOptions)
	}
	if in.PublicIpAddress != nil || aws.ToString(in.PrivateIpAddress) == "" || aws.ToString(in.SubnetId) != "subnet-private1" {
		t.Errorf("addresses: public %v private %v subnet %v", aws.ToString(in.PublicIpAddress), aws.ToString(in.PrivateIpAddress), aws.ToString(in.SubnetId))
	}
	if !strings.HasSuffix(aws.ToString(in.IamInstanceProfile.Arn), ":instance-profile/molecule-tenant") {
		t.Errorf("profile = %v", aws.ToString(in.IamInstanceProfile.Arn))
	}
	got := s.Instances()
	if len(got) != 1 {
		t.Fatalf("recorded %d instances, want 1", len(got))
	}
	l := got[0].Launch
	want := ec2test.Launch{HTTPTokens: "required", HopLimit: 2, MetadataTags: "enabled", InstanceProfileName: "molecule-tenant",
		SubnetID: "subnet-private1", UserData: "#!/bin/sh\nexec true\n"}
	if l.HTTPTokens != want.HTTPTokens || l.HopLimit != want.HopLimit || l.MetadataTags != want.MetadataTags ||
		l.InstanceProfileName != want.InstanceProfileName || l.SubnetID != want.SubnetID || l.UserData != want.UserData ||
		l.AssociatePublicIP == nil || *l.AssociatePublicIP || l.Tags["molecule:org"] != "acme" || len(l.SecurityGroups) != 1 {
		t.Errorf("launch = %+v", l)
	}
}

func TestClientTokenIdempotency(t *testing.T) {
	t.Parallel()
	s := ec2test.New(t)
	c := client(t, s, s.Credentials())
	first, err := c.RunInstances(t.Context(), launchInput("tok-1"))
	if err != nil {
		t.Fatal(err)
	}
	again, err := c.RunInstances(t.Context(), launchInput("tok-1"))
	if err != nil {
		t.Fatal(err)
	}
	if a, b := aws.ToString(first.Instances[0].InstanceId), aws.ToString(again.Instances[0].InstanceId); a != b || len(s.Instances()) != 1 {
		t.Errorf("same token launched %s then %s (%d instances), want the same one", a, b, len(s.Instances()))
	}
	other := launchInput("tok-1")
	other.InstanceType = types.InstanceTypeT3Large
	if _, err := c.RunInstances(t.Context(), other); code(err) != "IdempotentParameterMismatch" {
		t.Errorf("same token, other parameters: %v, want IdempotentParameterMismatch", err)
	}
	id := aws.ToString(first.Instances[0].InstanceId)
	if _, err := c.TerminateInstances(t.Context(), &ec2.TerminateInstancesInput{InstanceIds: []string{id}}); err != nil {
		t.Fatal(err)
	}
	s.SetState(id, ec2test.Terminated)
	after, err := c.RunInstances(t.Context(), launchInput("tok-1"))
	if err != nil || aws.ToString(after.Instances[0].InstanceId) != id || after.Instances[0].State.Name != types.InstanceStateNameTerminated {
		t.Errorf("token reused after termination = %v, %v; want the terminated instance back, as EC2 does", after, err)
	}
}

func TestDescribeTerminateConsole(t *testing.T) {
	t.Parallel()
	s := ec2test.New(t)
	c := client(t, s, s.Credentials())
	var ids []string
	for _, tok := range []string{"a", "b", "c", "d", "e", "f"} {
		in := launchInput(tok)
		if tok == "f" {
			in.TagSpecifications[0].Tags[0].Value = aws.String("other")
		}
		out, err := c.RunInstances(t.Context(), in)
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, aws.ToString(out.Instances[0].InstanceId))
	}
	byOrg := &ec2.DescribeInstancesInput{MaxResults: aws.Int32(5), Filters: []types.Filter{
		{Name: aws.String("tag:molecule:org"), Values: []string{"acme"}},
		{Name: aws.String("instance-state-name"), Values: []string{"pending", "running"}},
	}}
	count := func() (n int, pages int) {
		p := ec2.NewDescribeInstancesPaginator(c, byOrg)
		for p.HasMorePages() {
			out, err := p.NextPage(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			pages++
			for _, r := range out.Reservations {
				n += len(r.Instances)
			}
		}
		return n, pages
	}
	if n, pages := count(); n != 5 || pages != 1 {
		t.Errorf("acme's instances: %d in %d pages, want 5 in 1", n, pages)
	}
	if _, err := c.TerminateInstances(t.Context(), &ec2.TerminateInstancesInput{InstanceIds: ids[:2]}); err != nil {
		t.Fatal(err)
	}
	if n, _ := count(); n != 3 {
		t.Errorf("after terminating 2: %d live, want 3", n)
	}
	if _, err := c.TerminateInstances(t.Context(), &ec2.TerminateInstancesInput{InstanceIds: []string{"i-0000000000000dead"}}); code(err) != "InvalidInstanceID.NotFound" {
		t.Errorf("terminate unknown: %v, want InvalidInstanceID.NotFound", err)
	}
	s.SetConsole(ids[2], "MOLECULE AGENT BOOT FAILED: ssm\n")
	out, err := c.GetConsoleOutput(t.Context(), &ec2.GetConsoleOutputInput{InstanceId: aws.String(ids[2]), Latest: aws.Bool(true)})
	if err != nil || !strings.Contains(aws.ToString(out.Output), "TU9MRUNVTEUg") {
		t.Errorf("console = %v, %v; want base64 output", out, err)
	}
	if _, err := c.DescribeInstances(t.Context(), &ec2.DescribeInstancesInput{Filters: []types.Filter{{Name: aws.String("bogus"), Values: []string{"x"}}}}); code(err) != "InvalidParameterValue" {
		t.Errorf("bad filter: %v, want InvalidParameterValue", err)
	}
}

func TestFaultsAndRefusals(t *testing.T) {
	t.Parallel()
	tests := []struct {
		name     string
		setup    func(s *ec2test.Server)
		creds    func(s *ec2test.Server) aws.CredentialsProvider
		edit     func(in *ec2.RunInstancesInput)
		wantCode string
		wantMsg  string
	}{
		{name: "unauthorized", setup: func(s *ec2test.Server) { s.Fail("RunInstances", ec2test.Unauthorized) },
			wantCode: "UnauthorizedOperation", wantMsg: "ec2:RunInstances"},
		{name: "throttled", setup: func(s *ec2test.Server) { s.Fail("RunInstances", ec2test.Throttled) }, wantCode: "RequestLimitExceeded"},
		{name: "5xx", setup: func(s *ec2test.Server) { s.Fail("", ec2test.ServerError) }, wantCode: "InternalError"},
		{name: "wrong key", creds: func(*ec2test.Server) aws.CredentialsProvider {
			return credentials.NewStaticCredentialsProvider(ec2test.AccessKeyID, "wrong", "")
		}, wantCode: "SignatureDoesNotMatch"},
		{name: "subnet twice", edit: func(in *ec2.RunInstancesInput) { in.SubnetId = aws.String("subnet-x") }, wantCode: "InvalidParameterCombination"},
		{name: "hop limit", edit: func(in *ec2.RunInstancesInput) { in.MetadataOptions.HttpPutResponseHopLimit = aws.Int32(65) }, wantCode: "InvalidParameterValue"},
		{name: "reserved tag", edit: func(in *ec2.RunInstancesInput) {
			in.TagSpecifications[0].Tags[0].Key = aws.String("aws:x")
		}, wantCode: "InvalidParameterValue"},
		{name: "bad ami", edit: func(in *ec2.RunInstancesInput) { in.ImageId = aws.String("ubuntu") }, wantCode: "InvalidAMIID.Malformed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			s := ec2test.New(t)
			if tt.setup != nil {
				tt.setup(s)
			}
			creds := s.Credentials()
			if tt.creds != nil {
				creds = tt.creds(s)
			}
			in := launchInput("t")
			if tt.edit != nil {
				tt.edit(in)
			}
			_, err := client(t, s, creds).RunInstances(t.Context(), in)
			if code(err) != tt.wantCode || !strings.Contains(err.Error(), tt.wantMsg) {
				t.Fatalf("error = %v, want %s with %q", err, tt.wantCode, tt.wantMsg)
			}
			if len(s.Instances()) != 0 {
				t.Errorf("a refused launch left %d instances", len(s.Instances()))
			}
			if _, err := client(t, s, s.Credentials()).RunInstances(t.Context(), launchInput("t2")); tt.setup != nil && err != nil {
				t.Errorf("the fault outlived its one call: %v", err)
			}
		})
	}
}

func TestPublicSubnetGivesAPublicIPUnlessRefused(t *testing.T) {
	t.Parallel()
	s := ec2test.New(t)
	c := client(t, s, s.Credentials())
	in := launchInput("p1")
	in.NetworkInterfaces[0].SubnetId = aws.String(ec2test.PublicSubnetPrefix + "-1")
	in.NetworkInterfaces[0].AssociatePublicIpAddress = nil
	out, err := c.RunInstances(t.Context(), in)
	if err != nil || out.Instances[0].PublicIpAddress == nil {
		t.Errorf("public subnet without AssociatePublicIpAddress: %v %v, want a public IP", out, err)
	}
}
