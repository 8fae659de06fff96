package ec2test

import (
	"encoding/xml"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// Namespace is the XML namespace of every EC2 answer.
const Namespace = "http://ec2.amazonaws.com/doc/2016-11-15/"

// apiError is an error answer: HTTP status, code and message.
type apiError struct {
	status  int
	code    string
	message string
}

func (e *apiError) Error() string { return e.code + ": " + e.message }

func invalid(format string, a ...any) *apiError {
	return &apiError{http.StatusBadRequest, "InvalidParameterValue", fmt.Sprintf(format, a...)}
}

func missing(name string) *apiError {
	return &apiError{http.StatusBadRequest, "MissingParameter", "The request must contain the parameter " + name}
}

func notFound(id string) *apiError {
	return &apiError{http.StatusBadRequest, "InvalidInstanceID.NotFound", fmt.Sprintf("The instance ID '%s' does not exist", id)}
}

func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	form, perr := url.ParseQuery(string(body))
	rec := Request{Action: form.Get("Action"), ClientToken: form.Get("ClientToken"), InstanceIDs: list(form, "InstanceId")}
	out, aerr := s.handle(r, body, form, errorsJoin(err, perr))
	if aerr != nil {
		rec.Status, rec.ErrorCode = aerr.status, aerr.code
		s.record(rec)
		writeError(w, aerr)
		return
	}
	rec.Status = http.StatusOK
	s.record(rec)
	writeXML(w, http.StatusOK, out)
}

func errorsJoin(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

func (s *Server) record(r Request) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.requests = append(s.requests, r)
}

// handle authenticates, applies faults and runs the action.
func (s *Server) handle(r *http.Request, body []byte, form url.Values, decodeErr error) (any, *apiError) {
	if aerr := s.verify(r, body); aerr != nil {
		return nil, aerr
	}
	if r.Method != http.MethodPost || decodeErr != nil {
		return nil, &apiError{http.StatusBadRequest, "InvalidAction", "The action or operation requested is invalid. Verify that the action is typed correctly."}
	}
	action := form.Get("Action")
	if action == "" {
		return nil, missing("Action")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	fault := s.takeFaultLocked(action)
	switch fault {
	case Unauthorized:
		return nil, &apiError{http.StatusForbidden, "UnauthorizedOperation", fmt.Sprintf(
			"You are not authorized to perform this operation. User: arn:aws:sts::%s:assumed-role/%s/cp is not authorized to perform: ec2:%s on resource: arn:aws:ec2:%s:%s:instance/* because no identity-based policy allows the ec2:%s action. Encoded authorization failure message: %s",
			Account, RoleName, action, Region, Account, action, randomHex(40))}
	case Throttled:
		return nil, &apiError{http.StatusServiceUnavailable, "RequestLimitExceeded", "Request limit exceeded."}
	case ServerError:
		return nil, &apiError{http.StatusInternalServerError, "InternalError", "An internal error has occurred"}
	case Unavailable:
		return nil, &apiError{http.StatusServiceUnavailable, "Unavailable", "The service is unavailable. Please try again shortly."}
	}
	out, aerr := s.actionLocked(action, form)
	if fault == LostAnswer && aerr == nil {
		return nil, &apiError{http.StatusInternalServerError, "InternalError", "An internal error has occurred"}
	}
	return out, aerr
}

func (s *Server) actionLocked(action string, form url.Values) (any, *apiError) {
	switch action {
	case "RunInstances":
		return s.runInstancesLocked(form)
	case "TerminateInstances":
		return s.terminateInstancesLocked(form)
	case "DescribeInstances":
		return s.describeInstancesLocked(form)
	case "GetConsoleOutput":
		return s.getConsoleOutputLocked(form)
	}
	return nil, &apiError{http.StatusBadRequest, "InvalidAction", fmt.Sprintf("The action %s is not valid for this web service.", action)}
}

// list returns the values of a flattened list: prefix.1, prefix.2, ...
func list(form url.Values, prefix string) []string {
	var out []string
	for i := 1; ; i++ {
		v, ok := form[prefix+"."+strconv.Itoa(i)]
		if !ok {
			return out
		}
		out = append(out, v[0])
	}
}

type xmlTag struct {
	Key   string `xml:"key"`
	Value string `xml:"value"`
}

type xmlState struct {
	Code int    `xml:"code"`
	Name string `xml:"name"`
}

type xmlMetadata struct {
	State        string `xml:"state"`
	HTTPTokens   string `xml:"httpTokens"`
	HopLimit     int    `xml:"httpPutResponseHopLimit"`
	HTTPEndpoint string `xml:"httpEndpoint"`
	MetadataTags string `xml:"instanceMetadataTags"`
}

type xmlProfile struct {
	ARN string `xml:"arn"`
	ID  string `xml:"id"`
}

type xmlInstance struct {
	InstanceID   string      `xml:"instanceId"`
	ImageID      string      `xml:"imageId"`
	State        xmlState    `xml:"instanceState"`
	PrivateIP    string      `xml:"privateIpAddress,omitempty"`
	PublicIP     string      `xml:"ipAddress,omitempty"`
	SubnetID     string      `xml:"subnetId,omitempty"`
	InstanceType string      `xml:"instanceType"`
	LaunchTime   string      `xml:"launchTime"`
	ClientToken  string      `xml:"clientToken,omitempty"`
	Tags         []xmlTag    `xml:"tagSet>item"`
	Metadata     xmlMetadata `xml:"metadataOptions"`
	Profile      *xmlProfile `xml:"iamInstanceProfile,omitempty"`
}

type xmlReservation struct {
	ReservationID string        `xml:"reservationId"`
	OwnerID       string        `xml:"ownerId"`
	Instances     []xmlInstance `xml:"instancesSet>item"`
}

func (s *Server) wire(in *Instance) xmlInstance {
	l := in.Launch
	x := xmlInstance{
		InstanceID: in.ID, ImageID: l.ImageID, State: xmlState{stateCodes[in.State], in.State},
		SubnetID: l.SubnetID, InstanceType: l.InstanceType, ClientToken: l.ClientToken,
		LaunchTime: in.LaunchTime.UTC().Format("2006-01-02T15:04:05.000Z"),
		Metadata: xmlMetadata{State: "applied", HTTPTokens: or(l.HTTPTokens, "optional"), HopLimit: l.HopLimit,
			HTTPEndpoint: or(l.HTTPEndpoint, "enabled"), MetadataTags: or(l.MetadataTags, "disabled")},
	}
	if x.Metadata.HopLimit == 0 {
		x.Metadata.HopLimit = 1
	}
	if in.State != Terminated {
		x.PrivateIP = in.PrivateIP
		if s.publicIP(l) {
			x.PublicIP = "203.0.113." + in.PrivateIP[strings.LastIndex(in.PrivateIP, ".")+1:]
		}
	}
	if l.InstanceProfileName != "" || l.InstanceProfileARN != "" {
		arn := l.InstanceProfileARN
		if arn == "" {
			arn = "arn:aws:iam::" + Account + ":instance-profile/" + l.InstanceProfileName
		}
		x.Profile = &xmlProfile{ARN: arn, ID: "AIPA" + strings.ToUpper(randomHex(17))}
	}
	for _, k := range sortedKeys(l.Tags) {
		x.Tags = append(x.Tags, xmlTag{k, l.Tags[k]})
	}
	return x
}

// publicIP reports whether a launch gets a public address: asked for on
// interface 1, or left unset in a subnet that maps public IPs on launch.
func (s *Server) publicIP(l Launch) bool {
	if l.AssociatePublicIP != nil {
		return *l.AssociatePublicIP
	}
	return strings.HasPrefix(l.SubnetID, PublicSubnetPrefix)
}

func or(v, def string) string {
	if v == "" {
		return def
	}
	return v
}

func writeXML(w http.ResponseWriter, status int, v any) {
	b, err := xml.Marshal(v)
	if err != nil {
		writeError(w, &apiError{http.StatusInternalServerError, "InternalError", "marshal"})
		return
	}
	w.Header().Set("Content-Type", "text/xml;charset=UTF-8")
	w.Header().Set("Content-Length", strconv.Itoa(len(xml.Header)+len(b)))
	w.WriteHeader(status)
	_, _ = io.WriteString(w, xml.Header)
	_, _ = w.Write(b)
}

// writeError answers like EC2: <Response><Errors><Error>...</Errors><RequestID>.
func writeError(w http.ResponseWriter, e *apiError) {
	type xmlErr struct {
		Code    string `xml:"Code"`
		Message string `xml:"Message"`
	}
	writeXML(w, e.status, struct {
		XMLName   xml.Name `xml:"Response"`
		Errors    []xmlErr `xml:"Errors>Error"`
		RequestID string   `xml:"RequestID"`
	}{Errors: []xmlErr{{e.code, e.message}}, RequestID: requestID()})
}

func requestID() string {
	h := randomHex(32)
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:32]
}

// root is a success answer's element: the action's name plus "Response",
// in the EC2 namespace.
func root(action string) xml.Name { return xml.Name{Space: Namespace, Local: action + "Response"} }
