package ec2test

import (
	"net/url"
	"testing"
	"time"
)

// FuzzQuery feeds arbitrary form bodies to every action's parser: no input
// may panic, and an accepted launch keeps EC2's bounds.
func FuzzQuery(f *testing.F) {
	f.Add("Action=RunInstances&ImageId=ami-0123456789abcdef0&MinCount=1&MaxCount=1&MetadataOptions.HttpPutResponseHopLimit=2")
	f.Add("Action=RunInstances&ImageId=ami-01234567&MinCount=1&MaxCount=1&NetworkInterface.1.DeviceIndex=0&NetworkInterface.1.SubnetId=s&TagSpecification.1.ResourceType=instance&TagSpecification.1.Tag.1.Key=k")
	f.Add("Action=DescribeInstances&Filter.1.Name=tag:molecule:org&Filter.1.Value.1=acme&MaxResults=5&NextToken=ec2test-3")
	f.Add("Action=TerminateInstances&InstanceId.1=i-1")
	f.Add("Action=GetConsoleOutput&InstanceId=i-1&UserData=%%%")
	f.Fuzz(func(t *testing.T, body string) {
		form, err := url.ParseQuery(body)
		if err != nil {
			return
		}
		s := &Server{instances: map[string]*Instance{}, tokens: map[string]*reservation{}, now: time.Now}
		if l, aerr := parseLaunch(form); aerr == nil {
			if l.MinCount < 1 || l.MaxCount < l.MinCount || l.MaxCount > 20 || len(l.UserData) > MaxUserData {
				t.Fatalf("accepted a launch out of bounds: %+v", l)
			}
		}
		_, _ = s.actionLocked(form.Get("Action"), form)
	})
}
