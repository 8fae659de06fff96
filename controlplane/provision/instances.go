package provision

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"

	"github.com/molecule-ai/molecule-agent/bootstrap/hostparams"
)

// TagTunnel is the instance tag holding a tenant's Cloudflare tunnel ID,
// next to the molecule:* tags bootstrap reads (bootstrap/hostparams/params.go).
const TagTunnel = "molecule:tunnel-id"

// IMDS settings every instance is launched with: IMDSv2 only, a hop limit
// of 2 so containers on the host reach it, and tags readable through it
// (bootstrap reads its parameters from them).
const (
	imdsHopLimit = 2
)

// ec2API is the part of *ec2.Client the instance backend calls.
type ec2API interface {
	RunInstances(context.Context, *ec2.RunInstancesInput, ...func(*ec2.Options)) (*ec2.RunInstancesOutput, error)
	TerminateInstances(context.Context, *ec2.TerminateInstancesInput, ...func(*ec2.Options)) (*ec2.TerminateInstancesOutput, error)
	DescribeInstances(context.Context, *ec2.DescribeInstancesInput, ...func(*ec2.Options)) (*ec2.DescribeInstancesOutput, error)
	GetConsoleOutput(context.Context, *ec2.GetConsoleOutputInput, ...func(*ec2.Options)) (*ec2.GetConsoleOutputOutput, error)
}

// InstanceConfig is where and how hosts are launched.
type InstanceConfig struct {
	// ImageID is the AMI with the agent baked in.
	ImageID string
	// InstanceType is e.g. "t3.medium".
	InstanceType string
	// SubnetID is a private subnet; instances get no public IP.
	SubnetID string
	// SecurityGroups are the group IDs of the host's interface.
	SecurityGroups []string
	// InstanceProfile is the IAM instance profile name (the host role).
	InstanceProfile string
	// MaxPerOrg caps an org's live instances; 0 means 20.
	MaxPerOrg int
}

// Instances launches, lists, reads and terminates hosts on EC2.
type Instances struct {
	ec2   ec2API
	cfg   InstanceConfig
	retry Retry
	log   *slog.Logger
}

// NewInstances returns the EC2 backend over client (an *ec2.Client).
// log may be nil.
func NewInstances(client ec2API, cfg InstanceConfig, retry Retry, log *slog.Logger) (*Instances, error) {
	switch {
	case cfg.ImageID == "":
		return nil, errors.New("instances: ImageID is required (the AMI with the agent)")
	case cfg.InstanceType == "":
		return nil, errors.New("instances: InstanceType is required")
	case cfg.SubnetID == "":
		return nil, errors.New("instances: SubnetID is required (a private subnet)")
	case cfg.InstanceProfile == "":
		return nil, errors.New("instances: InstanceProfile is required (the host's IAM role)")
	}
	if cfg.MaxPerOrg <= 0 {
		cfg.MaxPerOrg = 20
	}
	return &Instances{ec2: client, cfg: cfg, retry: retry, log: orDiscard(log).With("backend", "ec2")}, nil
}

// LaunchSpec is one host to launch.
type LaunchSpec struct {
	// Key identifies this launch to the caller, e.g. "org/acme/tenant/1";
	// the same key always names the same launch (it becomes the EC2
	// ClientToken). Replacing a host takes a new key.
	Key string
	// Params are the host's bootstrap parameters; they become the
	// user-data line and the molecule:* tags.
	Params hostparams.Params
	// TunnelID is the tenant's Cloudflare tunnel (tenant hosts).
	TunnelID string
}

// Instance is a host as EC2 reports it.
type Instance struct {
	ID         string
	State      string
	PrivateIP  string
	LaunchTime time.Time
	Tags       map[string]string
	// ClientToken is the token it was launched with.
	ClientToken string
}

// Live reports whether the instance is not terminated nor terminating.
func (i Instance) Live() bool {
	return i.State != string(types.InstanceStateNameTerminated) && i.State != string(types.InstanceStateNameShuttingDown)
}

// ErrKeySpent is matched by Launch's error when the key's instance was
// terminated: EC2 keeps answering with it, so a replacement needs a new key.
var ErrKeySpent = errors.New("the launch key's instance is terminated")

// ErrCapReached is matched by Launch's error when the org already runs
// MaxPerOrg instances.
var ErrCapReached = errors.New("instance cap reached")

// ClientToken is the EC2 ClientToken for a launch key: at most 64 ASCII
// characters, the same for the same key.
func ClientToken(key string) string {
	sum := sha256.Sum256([]byte(key))
	return "molecule-" + hex.EncodeToString(sum[:])[:48]
}

// Tags returns the instance tags for a launch: exactly the molecule:* keys
// bootstrap reads, for the non-empty parameters, plus the tunnel ID.
func Tags(p hostparams.Params, tunnelID string) map[string]string {
	p = p.WithDefaults()
	tags := map[string]string{}
	for k, v := range map[string]string{
		hostparams.TagRole: p.Role, hostparams.TagOrg: p.Org, hostparams.TagWorkspace: p.Workspace,
		hostparams.TagControlPlane: p.ControlPlane, hostparams.TagSSMPrefix: p.SSMPrefix, hostparams.TagChannel: p.Channel,
		hostparams.TagPlatformURL: p.PlatformURL, TagTunnel: tunnelID,
	} {
		if v != "" {
			tags[k] = v
		}
	}
	return tags
}

// Launch starts the host for spec, or returns the one its key already
// launched. It refuses when the org is at its cap.
func (b *Instances) Launch(ctx context.Context, spec LaunchSpec) (Instance, error) {
	if spec.Key == "" {
		return Instance{}, errors.New("launch: a key is required (it makes the launch idempotent)")
	}
	userData, err := hostparams.RenderUserData(spec.Params)
	if err != nil {
		return Instance{}, fmt.Errorf("launch %s: user-data: %w", spec.Key, err)
	}
	token := ClientToken(spec.Key)
	log := b.log.With("key", spec.Key, "org", spec.Params.Org, "workspace", spec.Params.Workspace)

	live, err := b.List(ctx, Selector{Org: spec.Params.Org})
	if err != nil {
		return Instance{}, err
	}
	for _, in := range live {
		if in.ClientToken == token {
			log.Info("instance already launched", "instance", in.ID, "state", in.State)
			return in, nil
		}
	}
	if len(live) >= b.cfg.MaxPerOrg {
		return Instance{}, fmt.Errorf("launch %s: %w: org %s runs %d instances (cap %d); terminate one or raise the cap",
			spec.Key, ErrCapReached, spec.Params.Org, len(live), b.cfg.MaxPerOrg)
	}

	in := b.runInput(spec, token, userData)
	var out *ec2.RunInstancesOutput
	err = b.retry.do(ctx, log, "RunInstances", classifyAWS, func(ctx context.Context) error {
		out, err = b.ec2.RunInstances(ctx, in, noSDKRetry)
		return err
	})
	if err != nil {
		return Instance{}, wrapAWS("ec2:RunInstances", spec.Key, err)
	}
	if len(out.Instances) != 1 {
		return Instance{}, fmt.Errorf("ec2:RunInstances on %s: got %d instances, want 1", spec.Key, len(out.Instances))
	}
	inst := fromEC2(out.Instances[0])
	if !inst.Live() {
		return inst, fmt.Errorf("launch %s: %w: %s is %s; launch the replacement under a new key", spec.Key, ErrKeySpent, inst.ID, inst.State)
	}
	log.Info("instance launched", "instance", inst.ID, "private_ip", inst.PrivateIP)
	return inst, nil
}

func (b *Instances) runInput(spec LaunchSpec, token, userData string) *ec2.RunInstancesInput {
	tags := Tags(spec.Params, spec.TunnelID)
	var ec2Tags []types.Tag
	for _, k := range slices.Sorted(maps.Keys(tags)) {
		ec2Tags = append(ec2Tags, types.Tag{Key: aws.String(k), Value: aws.String(tags[k])})
	}
	return &ec2.RunInstancesInput{
		ImageId: aws.String(b.cfg.ImageID), InstanceType: types.InstanceType(b.cfg.InstanceType),
		MinCount: aws.Int32(1), MaxCount: aws.Int32(1), ClientToken: aws.String(token),
		IamInstanceProfile: &types.IamInstanceProfileSpecification{Name: aws.String(b.cfg.InstanceProfile)},
		MetadataOptions: &types.InstanceMetadataOptionsRequest{
			HttpTokens: types.HttpTokensStateRequired, HttpPutResponseHopLimit: aws.Int32(imdsHopLimit),
			HttpEndpoint: types.InstanceMetadataEndpointStateEnabled, InstanceMetadataTags: types.InstanceMetadataTagsStateEnabled,
		},
		NetworkInterfaces: []types.InstanceNetworkInterfaceSpecification{{
			DeviceIndex: aws.Int32(0), SubnetId: aws.String(b.cfg.SubnetID), AssociatePublicIpAddress: aws.Bool(false),
			Groups: b.cfg.SecurityGroups, DeleteOnTermination: aws.Bool(true),
		}},
		UserData:          aws.String(base64.StdEncoding.EncodeToString([]byte(userData))),
		TagSpecifications: []types.TagSpecification{{ResourceType: types.ResourceTypeInstance, Tags: ec2Tags}},
	}
}

// noSDKRetry turns the SDK's retryer off for one call: Retry governs.
func noSDKRetry(o *ec2.Options) { o.Retryer = aws.NopRetryer{} }

// Selector picks instances by our tags; empty fields match anything. An
// empty selector matches every instance tagged with a molecule:role.
type Selector struct {
	Org       string
	Workspace string
	Role      string
}

// List returns the live instances (not terminated nor shutting down)
// matching sel.
func (b *Instances) List(ctx context.Context, sel Selector) ([]Instance, error) {
	filters := []types.Filter{
		{Name: aws.String("instance-state-name"), Values: []string{"pending", "running", "stopping", "stopped"}},
		{Name: aws.String("tag-key"), Values: []string{hostparams.TagRole}},
	}
	for k, v := range map[string]string{hostparams.TagOrg: sel.Org, hostparams.TagWorkspace: sel.Workspace, hostparams.TagRole: sel.Role} {
		if v != "" {
			filters = append(filters, types.Filter{Name: aws.String("tag:" + k), Values: []string{v}})
		}
	}
	in := &ec2.DescribeInstancesInput{Filters: filters, MaxResults: aws.Int32(100)}
	var out []Instance
	for {
		var page *ec2.DescribeInstancesOutput
		err := b.retry.do(ctx, b.log, "DescribeInstances", classifyAWS, func(ctx context.Context) (err error) {
			page, err = b.ec2.DescribeInstances(ctx, in, noSDKRetry)
			return err
		})
		if err != nil {
			return nil, wrapAWS("ec2:DescribeInstances", fmt.Sprintf("org %q", sel.Org), err)
		}
		for _, r := range page.Reservations {
			for _, i := range r.Instances {
				out = append(out, fromEC2(i))
			}
		}
		if aws.ToString(page.NextToken) == "" {
			return out, nil
		}
		in.NextToken = page.NextToken
	}
}

// Terminate terminates the instances; an instance EC2 no longer knows
// counts as terminated.
func (b *Instances) Terminate(ctx context.Context, ids ...string) error {
	for _, id := range ids {
		err := b.retry.do(ctx, b.log, "TerminateInstances", classifyAWS, func(ctx context.Context) error {
			_, err := b.ec2.TerminateInstances(ctx, &ec2.TerminateInstancesInput{InstanceIds: []string{id}}, noSDKRetry)
			return err
		})
		switch {
		case awsCode(err) == "InvalidInstanceID.NotFound":
			b.log.Info("instance already gone", "instance", id)
		case err != nil:
			return wrapAWS("ec2:TerminateInstances", id, err)
		default:
			b.log.Info("instance terminating", "instance", id)
		}
	}
	return nil
}

// Console returns the instance's latest console output ("" when there is
// none yet). It may hold anything the host printed: redact before showing.
func (b *Instances) Console(ctx context.Context, id string) (string, error) {
	var out *ec2.GetConsoleOutputOutput
	err := b.retry.do(ctx, b.log, "GetConsoleOutput", classifyAWS, func(ctx context.Context) (err error) {
		out, err = b.ec2.GetConsoleOutput(ctx, &ec2.GetConsoleOutputInput{InstanceId: aws.String(id), Latest: aws.Bool(true)}, noSDKRetry)
		return err
	})
	if awsCode(err) == "InvalidInstanceID.NotFound" {
		return "", fmt.Errorf("console of %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return "", wrapAWS("ec2:GetConsoleOutput", id, err)
	}
	raw, err := base64.StdEncoding.DecodeString(aws.ToString(out.Output))
	if err != nil {
		return "", fmt.Errorf("console of %s: output is not base64: %w", id, err)
	}
	return string(raw), nil
}

func fromEC2(i types.Instance) Instance {
	in := Instance{ID: aws.ToString(i.InstanceId), PrivateIP: aws.ToString(i.PrivateIpAddress),
		LaunchTime: aws.ToTime(i.LaunchTime), ClientToken: aws.ToString(i.ClientToken), Tags: map[string]string{}}
	if i.State != nil {
		in.State = string(i.State.Name)
	}
	for _, t := range i.Tags {
		in.Tags[aws.ToString(t.Key)] = aws.ToString(t.Value)
	}
	return in
}
