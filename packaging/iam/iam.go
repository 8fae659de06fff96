// Package iam holds the IAM policy templates of the fleet and the SSM
// parameter layout they grant (docs/ssm-layout.md): the tenant and
// workspace instance roles (read only their own SSM prefix, decrypt only
// through SSM with that prefix as encryption context), the optional grant
// that lets a workspace host persist its own token, and the control
// plane's role (never decrypts). Render fills their ${placeholders}.
package iam

import (
	"embed"
	"encoding/json"
	"fmt"
	"regexp"
	"sort"
	"strings"
)

//go:embed *.json
var files embed.FS

// Template names.
const (
	TenantInstanceRole    = "tenant-instance-role.json"
	WorkspaceInstanceRole = "workspace-instance-role.json"
	ControlPlaneRole      = "controlplane-role.json"
	// WorkspacePersistToken is added to a workspace host's role only when
	// workspace.persist_token is on: PutParameter on its own token, nothing else.
	WorkspacePersistToken = "workspace-persist-token.json"
)

// The SSM parameter layout. A tenant's prefix and its workspaces' prefixes
// are disjoint trees, because a grant on a path reaches every level below
// it (GetParametersByPath): nesting workspaces under the tenant would hand
// the tenant host its workspaces' tokens.

// TenantPrefix is the SSM path of a tenant host's parameters.
func TenantPrefix(env, org string) string { return "/molecule/" + env + "/tenants/" + org }

// WorkspacePrefix is the SSM path of one workspace host's parameters.
func WorkspacePrefix(env, org, workspace string) string {
	return "/molecule/" + env + "/workspaces/" + org + "/" + workspace
}

// WorkspaceTokenName is the workspace auth token's parameter name under
// WorkspacePrefix (agent/config/roles/workspace.yaml references it).
const WorkspaceTokenName = "workspace-auth-token"

var placeholderRE = regexp.MustCompile(`\$\{([a-z_]+)\}`)

// valueRE bounds what a placeholder may become: no quotes, wildcards or
// path tricks that would widen the policy.
var valueRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9_.-]*$`)

// Placeholders lists the ${names} a template needs.
func Placeholders(name string) ([]string, error) {
	b, err := files.ReadFile(name)
	if err != nil {
		return nil, fmt.Errorf("no policy template %q", name)
	}
	seen := map[string]bool{}
	for _, m := range placeholderRE.FindAllStringSubmatch(string(b), -1) {
		seen[m[1]] = true
	}
	out := make([]string, 0, len(seen))
	for k := range seen {
		out = append(out, k)
	}
	sort.Strings(out)
	return out, nil
}

// Render fills every placeholder of the template from vars and returns
// the policy JSON. A missing or unsafe value (e.g. "*") is an error.
func Render(name string, vars map[string]string) ([]byte, error) {
	b, err := files.ReadFile(name)
	if err != nil {
		return nil, fmt.Errorf("no policy template %q", name)
	}
	var errs []string
	out := placeholderRE.ReplaceAllStringFunc(string(b), func(m string) string {
		k := m[2 : len(m)-1]
		v, ok := vars[k]
		switch {
		case !ok:
			errs = append(errs, k+": missing")
		case !valueRE.MatchString(v):
			errs = append(errs, k+": must be letters, digits, '.', '_' or '-' (no wildcards)")
		}
		return v
	})
	if len(errs) > 0 {
		sort.Strings(errs)
		return nil, fmt.Errorf("policy %s: %s", name, strings.Join(dedupe(errs), "; "))
	}
	if !json.Valid([]byte(out)) {
		return nil, fmt.Errorf("policy %s: rendered JSON is invalid", name)
	}
	return []byte(out), nil
}

func dedupe(s []string) []string {
	out := s[:0]
	for i, v := range s {
		if i == 0 || v != s[i-1] {
			out = append(out, v)
		}
	}
	return out
}
