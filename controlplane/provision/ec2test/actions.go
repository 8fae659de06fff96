package ec2test

import (
	"encoding/base64"
	"encoding/xml"
	"fmt"
	"net/http"
	"net/url"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// PublicSubnetPrefix marks a subnet ID whose subnet maps a public IP on
// launch (MapPublicIpOnLaunch): an instance launched there without
// AssociatePublicIpAddress=false on its interface gets a public address.
const PublicSubnetPrefix = "subnet-public"

// MaxUserData is EC2's limit on decoded user-data.
const MaxUserData = 16384

var amiRE = regexp.MustCompile(`^ami-[0-9a-f]{8,17}$`)

// parseLaunch decodes RunInstances' form and applies EC2's checks.
func parseLaunch(form url.Values) (Launch, *apiError) {
	l := Launch{
		ImageID: form.Get("ImageId"), InstanceType: or(form.Get("InstanceType"), "m1.small"),
		ClientToken: form.Get("ClientToken"), SubnetID: form.Get("SubnetId"),
		SecurityGroups: list(form, "SecurityGroupId"),
		HTTPTokens:     form.Get("MetadataOptions.HttpTokens"), HTTPEndpoint: form.Get("MetadataOptions.HttpEndpoint"),
		MetadataTags:        form.Get("MetadataOptions.InstanceMetadataTags"),
		InstanceProfileName: form.Get("IamInstanceProfile.Name"), InstanceProfileARN: form.Get("IamInstanceProfile.Arn"),
	}
	var err error
	switch {
	case l.ImageID == "":
		return l, missing("ImageId")
	case !amiRE.MatchString(l.ImageID):
		return l, &apiError{http.StatusBadRequest, "InvalidAMIID.Malformed", fmt.Sprintf("Invalid id: %q (expecting \"ami-...\")", l.ImageID)}
	case form.Get("MinCount") == "":
		return l, missing("MinCount")
	case form.Get("MaxCount") == "":
		return l, missing("MaxCount")
	case len(l.ClientToken) > 64:
		return l, invalid("Value (%s) for parameter clientToken is invalid. Length exceeds maximum of 64 characters.", l.ClientToken)
	}
	if l.MinCount, err = strconv.Atoi(form.Get("MinCount")); err != nil || l.MinCount < 1 {
		return l, invalid("Value (%s) for parameter minCount is invalid. Expected a positive integer.", form.Get("MinCount"))
	}
	if l.MaxCount, err = strconv.Atoi(form.Get("MaxCount")); err != nil || l.MaxCount < l.MinCount || l.MaxCount > 20 {
		return l, invalid("Value (%s) for parameter maxCount is invalid. Expected an integer between minCount and 20.", form.Get("MaxCount"))
	}
	if aerr := parseInterface(form, &l); aerr != nil {
		return l, aerr
	}
	if aerr := parseMetadata(form, &l); aerr != nil {
		return l, aerr
	}
	if l.InstanceProfileName != "" && l.InstanceProfileARN != "" {
		return l, &apiError{http.StatusBadRequest, "InvalidParameterCombination", "The parameter 'iamInstanceProfile.name' may not be used in combination with 'iamInstanceProfile.arn'"}
	}
	if ud := form.Get("UserData"); ud != "" {
		raw, err := base64.StdEncoding.DecodeString(ud)
		if err != nil {
			return l, invalid("Invalid BASE64 encoding of user data.")
		}
		if len(raw) > MaxUserData {
			return l, invalid("User data is limited to %d bytes", MaxUserData)
		}
		l.UserData = string(raw)
	}
	return l, parseTags(form, &l)
}

func parseInterface(form url.Values, l *Launch) *apiError {
	const p = "NetworkInterface.1."
	for k := range form {
		if strings.HasPrefix(k, "NetworkInterface.") && !strings.HasPrefix(k, p) {
			return &apiError{http.StatusBadRequest, "Unsupported", "ec2test serves one network interface"}
		}
		if strings.HasPrefix(k, p) {
			l.NetworkInterface = true
		}
	}
	if !l.NetworkInterface {
		return nil
	}
	if l.SubnetID != "" || len(l.SecurityGroups) > 0 {
		return &apiError{http.StatusBadRequest, "InvalidParameterCombination", "Network interfaces and an instance-level subnet ID or security groups may not be specified on the same request"}
	}
	if form.Get(p+"DeviceIndex") != "0" && form.Get(p+"NetworkInterfaceId") == "" {
		return invalid("Each network interface requires a device index.")
	}
	l.SubnetID = form.Get(p + "SubnetId")
	l.SecurityGroups = list(form, p+"SecurityGroupId")
	if v := form.Get(p + "AssociatePublicIpAddress"); v != "" {
		b := v == "true"
		l.AssociatePublicIP = &b
	}
	if l.SubnetID == "" {
		return invalid("Network interface 1 needs a subnet ID.")
	}
	return nil
}

func parseMetadata(form url.Values, l *Launch) *apiError {
	if t := l.HTTPTokens; t != "" && t != "optional" && t != "required" {
		return invalid("Value (%s) for parameter HttpTokens is invalid. Valid values are optional and required.", t)
	}
	if e := l.HTTPEndpoint; e != "" && e != "enabled" && e != "disabled" {
		return invalid("Value (%s) for parameter HttpEndpoint is invalid.", e)
	}
	if m := l.MetadataTags; m != "" && m != "enabled" && m != "disabled" {
		return invalid("Value (%s) for parameter InstanceMetadataTags is invalid.", m)
	}
	if v := form.Get("MetadataOptions.HttpPutResponseHopLimit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > 64 {
			return invalid("Value (%s) for parameter HttpPutResponseHopLimit is invalid. Valid values are 1 to 64.", v)
		}
		l.HopLimit = n
	}
	return nil
}

func parseTags(form url.Values, l *Launch) *apiError {
	for i := 1; ; i++ {
		p := "TagSpecification." + strconv.Itoa(i) + "."
		rt, ok := form[p+"ResourceType"]
		if !ok {
			return nil
		}
		l.TagResourceTypes = append(l.TagResourceTypes, rt[0])
		tags := map[string]string{}
		for j := 1; ; j++ {
			tp := p + "Tag." + strconv.Itoa(j) + "."
			k, ok := form[tp+"Key"]
			if !ok {
				break
			}
			switch {
			case strings.HasPrefix(strings.ToLower(k[0]), "aws:"):
				return invalid("Tag keys starting with 'aws:' are reserved for internal use")
			case len(k[0]) == 0 || len(k[0]) > 128:
				return invalid("Tag key must be 1 to 128 characters")
			case len(form.Get(tp+"Value")) > 256:
				return invalid("Tag value for key %s exceeds 256 characters", k[0])
			}
			if _, dup := tags[k[0]]; dup {
				return invalid("Duplicate tag key '%s' specified.", k[0])
			}
			tags[k[0]] = form.Get(tp + "Value")
		}
		if len(tags) > 50 {
			return &apiError{http.StatusBadRequest, "TagLimitExceeded", "The maximum number of tags per resource is 50"}
		}
		if rt[0] == "instance" {
			l.Tags = tags
		}
	}
}

func (s *Server) runInstancesLocked(form url.Values) (any, *apiError) {
	l, aerr := parseLaunch(form)
	if aerr != nil {
		return nil, aerr
	}
	if l.ClientToken != "" {
		if r, ok := s.tokens[l.ClientToken]; ok {
			if !reflect.DeepEqual(r.launch, l) {
				return nil, &apiError{http.StatusBadRequest, "IdempotentParameterMismatch", fmt.Sprintf(
					"Arguments on this idempotent request are inconsistent with arguments used in previous request(s) with the same client token (%s).", l.ClientToken)}
			}
			return s.reservationLocked("RunInstances", r), nil
		}
	}
	r := &reservation{id: "r-" + randomHex(17), launch: l}
	now := s.now()
	for range l.MaxCount {
		in := &Instance{ID: "i-" + randomHex(17), ReservationID: r.id, State: Pending, LaunchTime: now, Launch: l,
			PrivateIP: fmt.Sprintf("10.0.%d.%d", s.nextIP/250, 4+s.nextIP%250)}
		s.nextIP++
		s.instances[in.ID] = in
		r.instances = append(r.instances, in.ID)
	}
	if l.ClientToken != "" {
		s.tokens[l.ClientToken] = r
	}
	return s.reservationLocked("RunInstances", r), nil
}

func (s *Server) reservationLocked(action string, r *reservation) any {
	x := xmlReservation{ReservationID: r.id, OwnerID: Account}
	for _, id := range r.instances {
		x.Instances = append(x.Instances, s.wire(s.instances[id]))
	}
	return struct {
		XMLName   xml.Name
		RequestID string `xml:"requestId"`
		xmlReservation
	}{root(action), requestID(), x}
}

func (s *Server) terminateInstancesLocked(form url.Values) (any, *apiError) {
	ids := list(form, "InstanceId")
	if len(ids) == 0 {
		return nil, missing("InstanceId")
	}
	for _, id := range ids {
		if _, ok := s.instances[id]; !ok {
			return nil, notFound(id)
		}
	}
	type change struct {
		InstanceID string   `xml:"instanceId"`
		Current    xmlState `xml:"currentState"`
		Previous   xmlState `xml:"previousState"`
	}
	var out []change
	for _, id := range ids {
		in := s.instances[id]
		prev := in.State
		if in.State != Terminated {
			in.State = ShuttingDown
		}
		out = append(out, change{id, xmlState{stateCodes[in.State], in.State}, xmlState{stateCodes[prev], prev}})
	}
	return struct {
		XMLName   xml.Name
		RequestID string   `xml:"requestId"`
		Instances []change `xml:"instancesSet>item"`
	}{root("TerminateInstances"), requestID(), out}, nil
}

// advanceLocked moves every transitional instance one step on, as time
// passing between two DescribeInstances would.
func (s *Server) advanceLocked() {
	for _, in := range s.instances {
		switch in.State {
		case Pending:
			in.State = Running
		case ShuttingDown:
			in.State = Terminated
		case Stopping:
			in.State = Stopped
		}
	}
}

type filter struct {
	name   string
	values []string
}

func (f filter) match(in *Instance) (bool, *apiError) {
	var have []string
	switch {
	case strings.HasPrefix(f.name, "tag:"):
		v, ok := in.Launch.Tags[strings.TrimPrefix(f.name, "tag:")]
		if !ok {
			return false, nil
		}
		have = []string{v}
	case f.name == "tag-key":
		for k := range in.Launch.Tags {
			have = append(have, k)
		}
	case f.name == "instance-state-name":
		have = []string{in.State}
	case f.name == "instance-id":
		have = []string{in.ID}
	case f.name == "client-token":
		have = []string{in.Launch.ClientToken}
	case f.name == "subnet-id":
		have = []string{in.Launch.SubnetID}
	default:
		return false, invalid("The filter '%s' is invalid", f.name)
	}
	for _, want := range f.values {
		if slices.Contains(have, want) {
			return true, nil
		}
	}
	return false, nil
}

func (s *Server) describeInstancesLocked(form url.Values) (any, *apiError) {
	s.advanceLocked()
	ids := list(form, "InstanceId")
	var filters []filter
	for i := 1; ; i++ {
		p := "Filter." + strconv.Itoa(i) + "."
		name, ok := form[p+"Name"]
		if !ok {
			break
		}
		filters = append(filters, filter{name[0], list(form, p+"Value")})
	}
	limit := 1000
	if v := form.Get("MaxResults"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 5 || n > 1000 {
			return nil, invalid("Value ( %s ) for parameter maxResults is invalid. Expecting a value greater than 5.", v)
		}
		if len(ids) > 0 {
			return nil, &apiError{http.StatusBadRequest, "InvalidParameterCombination", "The parameter instancesSet cannot be used with the parameter maxResults"}
		}
		limit = n
	}
	for _, id := range ids {
		if _, ok := s.instances[id]; !ok {
			return nil, notFound(id)
		}
	}
	var match []*Instance
	for _, id := range sortedKeys(s.instances) {
		in := s.instances[id]
		if len(ids) > 0 && !slices.Contains(ids, id) {
			continue
		}
		ok := true
		for _, f := range filters {
			m, aerr := f.match(in)
			if aerr != nil {
				return nil, aerr
			}
			ok = ok && m
		}
		if ok {
			match = append(match, in)
		}
	}
	start := 0
	if tok := form.Get("NextToken"); tok != "" {
		n, err := strconv.Atoi(strings.TrimPrefix(tok, "ec2test-"))
		if err != nil || !strings.HasPrefix(tok, "ec2test-") || n > len(match) {
			return nil, invalid("Unable to parse pagination token")
		}
		start = n
	}
	end := min(start+limit, len(match))
	byRes := map[string]*xmlReservation{}
	var order []string
	for _, in := range match[start:end] {
		r, ok := byRes[in.ReservationID]
		if !ok {
			r = &xmlReservation{ReservationID: in.ReservationID, OwnerID: Account}
			byRes[in.ReservationID] = r
			order = append(order, in.ReservationID)
		}
		r.Instances = append(r.Instances, s.wire(in))
	}
	out := struct {
		XMLName      xml.Name
		RequestID    string           `xml:"requestId"`
		Reservations []xmlReservation `xml:"reservationSet>item"`
		NextToken    string           `xml:"nextToken,omitempty"`
	}{XMLName: root("DescribeInstances"), RequestID: requestID()}
	for _, id := range order {
		out.Reservations = append(out.Reservations, *byRes[id])
	}
	if end < len(match) {
		out.NextToken = "ec2test-" + strconv.Itoa(end)
	}
	return out, nil
}

func (s *Server) getConsoleOutputLocked(form url.Values) (any, *apiError) {
	id := form.Get("InstanceId")
	if id == "" {
		return nil, missing("InstanceId")
	}
	in, ok := s.instances[id]
	if !ok {
		return nil, notFound(id)
	}
	out := struct {
		XMLName    xml.Name
		RequestID  string `xml:"requestId"`
		InstanceID string `xml:"instanceId"`
		Timestamp  string `xml:"timestamp"`
		Output     string `xml:"output,omitempty"`
	}{XMLName: root("GetConsoleOutput"), RequestID: requestID(), InstanceID: id,
		Timestamp: s.now().UTC().Format("2006-01-02T15:04:05.000Z")}
	if in.Console != "" {
		out.Output = base64.StdEncoding.EncodeToString([]byte(in.Console))
	}
	return out, nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
