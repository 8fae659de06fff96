//go:build unix

package ssmtest

import (
	"encoding/json"
	"fmt"
	"strings"
)

// policy is the caller's identity-based IAM policy as the server enforces
// it: an action on a parameter ARN is allowed when an Allow statement
// matches both and no Deny statement does. Like IAM, GetParametersByPath
// is authorized on the ARN of the path itself, and then returns every
// parameter under it: a grant on a path reaches all levels below it.
type policy struct {
	statements []statement
}

type statement struct {
	allow     bool
	actions   []string
	resources []string
}

// SetPolicy makes the server enforce an identity-based IAM policy document
// (JSON, as in packaging/iam) for every request: parameter reads outside
// its Allow statements, or inside a Deny, answer AccessDeniedException with
// AWS's message. nil lifts the policy (everything is allowed, the default).
// Conditions are not evaluated; a statement with NotAction or NotResource
// is refused, so a policy the server cannot judge never passes a test.
func (s *Server) SetPolicy(doc []byte) error {
	var p *policy
	if doc != nil {
		var err error
		if p, err = parsePolicy(doc); err != nil {
			return err
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.policy = p
	return nil
}

func parsePolicy(doc []byte) (*policy, error) {
	var raw struct {
		Statement []map[string]json.RawMessage
	}
	if err := json.Unmarshal(doc, &raw); err != nil {
		return nil, fmt.Errorf("ssmtest: policy: %w", err)
	}
	p := &policy{}
	for i, st := range raw.Statement {
		for _, k := range []string{"NotAction", "NotResource", "NotPrincipal"} {
			if _, ok := st[k]; ok {
				return nil, fmt.Errorf("ssmtest: policy statement %d: %s is not supported", i, k)
			}
		}
		var effect string
		if err := json.Unmarshal(st["Effect"], &effect); err != nil || (effect != "Allow" && effect != "Deny") {
			return nil, fmt.Errorf("ssmtest: policy statement %d: Effect must be Allow or Deny", i)
		}
		actions, err := stringOrList(st["Action"])
		if err != nil {
			return nil, fmt.Errorf("ssmtest: policy statement %d: Action: %w", i, err)
		}
		resources, err := stringOrList(st["Resource"])
		if err != nil {
			return nil, fmt.Errorf("ssmtest: policy statement %d: Resource: %w", i, err)
		}
		p.statements = append(p.statements, statement{allow: effect == "Allow", actions: actions, resources: resources})
	}
	return p, nil
}

func stringOrList(b json.RawMessage) ([]string, error) {
	var one string
	if err := json.Unmarshal(b, &one); err == nil {
		return []string{one}, nil
	}
	var many []string
	if err := json.Unmarshal(b, &many); err != nil {
		return nil, fmt.Errorf("want a string or a list of strings")
	}
	return many, nil
}

// decision is what IAM answers for one action on one resource.
type decision int

const (
	implicitDeny decision = iota
	allowed
	explicitDeny
)

func (p *policy) decide(action, resource string) decision {
	d := implicitDeny
	for _, st := range p.statements {
		if !matchAny(st.actions, action, true) || !matchAny(st.resources, resource, false) {
			continue
		}
		if !st.allow {
			return explicitDeny
		}
		d = allowed
	}
	return d
}

func matchAny(patterns []string, s string, fold bool) bool {
	for _, p := range patterns {
		if fold {
			p, s = strings.ToLower(p), strings.ToLower(s)
		}
		if wildcard(p, s) {
			return true
		}
	}
	return false
}

// wildcard is IAM's glob: * is any run of characters (slashes included),
// ? is one character; everything else matches itself.
func wildcard(p, s string) bool {
	px, sx := 0, 0
	star, mark := -1, 0
	for sx < len(s) {
		switch {
		case px < len(p) && (p[px] == '?' || p[px] == s[sx]):
			px++
			sx++
		case px < len(p) && p[px] == '*':
			star, mark = px, sx
			px++
		case star >= 0:
			px, mark = star+1, mark+1
			sx = mark
		default:
			return false
		}
	}
	for px < len(p) && p[px] == '*' {
		px++
	}
	return px == len(p)
}
