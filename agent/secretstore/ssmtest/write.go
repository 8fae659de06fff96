//go:build unix

package ssmtest

import (
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"strings"
)

// The write operations a provisioner calls: PutParameter and
// DeleteParameters, with SSM's rules for overwrite, tags, names and sizes.

// maxStandardValue is the largest value of a Standard-tier parameter.
const maxStandardValue = 4096

// nameRE is what SSM accepts in a parameter name: letters, digits and
// .-_/ ; a hierarchical name begins with a slash.
var nameRE = regexp.MustCompile(`^[A-Za-z0-9_.\-/]+$`)

// putInput is PutParameter's request.
type putInput struct {
	Name      *string           `json:"Name"`
	Value     *string           `json:"Value"`
	Type      string            `json:"Type"`
	Overwrite *bool             `json:"Overwrite"`
	Tier      string            `json:"Tier"`
	Tags      []json.RawMessage `json:"Tags"`
}

func (s *Server) putParameterLocked(body []byte) (any, *apiError) {
	var in putInput
	if err := json.Unmarshal(body, &in); err != nil {
		return nil, &apiError{http.StatusBadRequest, "SerializationException", "Start of structure or map found where not expected."}
	}
	switch {
	case in.Name == nil:
		return nil, validation("1 validation error detected: Value null at 'name' failed to satisfy constraint: Member must not be null")
	case in.Value == nil:
		return nil, validation("1 validation error detected: Value null at 'value' failed to satisfy constraint: Member must not be null")
	case *in.Value == "":
		return nil, validation("1 validation error detected: Value at 'value' failed to satisfy constraint: Member must have length greater than or equal to 1")
	}
	name := *in.Name
	if aerr := checkName(name); aerr != nil {
		return nil, aerr
	}
	switch in.Type {
	case "", String, StringList, SecureString:
	default:
		return nil, validation(fmt.Sprintf("1 validation error detected: Value '%s' at 'type' failed to satisfy constraint: Member must satisfy enum value set: [SecureString, StringList, String]", in.Type))
	}
	if in.Tier == "" || in.Tier == "Standard" {
		if len(*in.Value) > maxStandardValue {
			return nil, validation("Standard tier parameters support a maximum parameter value of 4096 characters. To create a larger parameter value, upgrade the parameter to use the advanced-parameter tier. For more information, see https://docs.aws.amazon.com/systems-manager/latest/userguide/parameter-store-advanced-parameters.html")
		}
	}
	overwrite := in.Overwrite != nil && *in.Overwrite
	if overwrite && len(in.Tags) > 0 {
		return nil, validation("Invalid request: tags and overwrite can't be used together. To create a parameter with tags, please remove overwrite flag. To update tags for an existing parameter, please use AddTagsToResource or RemoveTagsFromResource.")
	}
	if e := s.authorizeLocked("PutParameter", name); e != nil {
		return nil, e
	}
	p, exists := s.params[name]
	switch {
	case exists && !overwrite:
		return nil, &apiError{http.StatusBadRequest, "ParameterAlreadyExists", "The parameter already exists. To overwrite this value, set the overwrite option in the request to true."}
	case !exists && in.Type == "":
		return nil, validation("A parameter type is required when you create a parameter.")
	case !exists:
		p = &param{name: name}
		s.params[name] = p
	}
	if in.Type != "" {
		p.typ = in.Type
	}
	p.value, p.version, p.modified = *in.Value, p.version+1, s.now()
	return map[string]any{"Version": p.version, "Tier": "Standard"}, nil
}

func (s *Server) deleteParametersLocked(in input) (any, *apiError) {
	if len(in.Names) == 0 || len(in.Names) > 10 {
		return nil, validation(fmt.Sprintf("1 validation error detected: Value '%d' at 'names' failed to satisfy constraint: Member must have length less than or equal to 10 and greater than or equal to 1", len(in.Names)))
	}
	for _, n := range in.Names {
		if e := s.authorizeLocked("DeleteParameters", n); e != nil {
			return nil, e
		}
	}
	deleted, invalid := []string{}, []string{}
	for _, n := range in.Names {
		if _, ok := s.params[n]; ok {
			delete(s.params, n)
			deleted = append(deleted, n)
		} else {
			invalid = append(invalid, n)
		}
	}
	return map[string]any{"DeletedParameters": deleted, "InvalidParameters": invalid}, nil
}

// checkName applies SSM's naming rules for a new parameter.
func checkName(name string) *apiError {
	if len(name) > 2048 || !nameRE.MatchString(name) {
		return validation("Parameter name: can't be prefixed with \"aws\" or \"ssm\" (case-insensitive). It must use only letters, numbers, or the following symbols: . (period), - (hyphen), _ (underscore). Special characters are not allowed. All sub-paths, if specified, must use the forward slash symbol \"/\". Valid example: /get/parameters2-/by1./path0_.")
	}
	if strings.Contains(name, "/") && !strings.HasPrefix(name, "/") {
		return validation(`Parameter name must be a fully qualified name.`)
	}
	first := strings.ToLower(strings.TrimPrefix(name, "/"))
	if strings.HasPrefix(first, "aws") || strings.HasPrefix(first, "ssm") {
		return validation(`No access to reserved parameter name: ` + name + `.`)
	}
	if strings.Count(name, "/") > 15 {
		return validation("Parameter name exceeds the maximum depth of 15 levels.")
	}
	return nil
}

// Value returns a parameter's type and value, for assertions on what a
// client wrote; ok is false when there is no such parameter.
func (s *Server) Value(name string) (typ, value string, ok bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	p, ok := s.params[name]
	if !ok {
		return "", "", false
	}
	return p.typ, p.value, true
}

// Names returns the names of every parameter under prefix, in order.
func (s *Server) Names(prefix string) []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	base := strings.TrimSuffix(prefix, "/") + "/"
	var out []string
	for _, p := range s.sortedLocked() {
		if strings.HasPrefix(p.name, base) || prefix == "" || prefix == "/" {
			out = append(out, p.name)
		}
	}
	return out
}
