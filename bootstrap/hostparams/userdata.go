package hostparams

import (
	"fmt"
	"regexp"
	"strings"
)

// AgentPath is where the AMI installs the agent.
const AgentPath = "/usr/local/bin/molecule-agent"

// RenderUserData returns the EC2 user-data that boots a host with p:
//
//	#!/bin/sh
//	exec /usr/local/bin/molecule-agent bootstrap --role tenant --org acme ...
//
// Values are shell-quoted. It fails if p is invalid or if any value looks
// like a secret (user-data is readable by anyone who can describe the
// instance): secrets belong in SSM under the host's prefix.
func RenderUserData(p Params) (string, error) {
	p = p.WithDefaults()
	if err := p.Validate(); err != nil {
		return "", err
	}
	var b strings.Builder
	b.WriteString("#!/bin/sh\nexec " + AgentPath + " bootstrap")
	for _, f := range p.Flags() {
		if reason, bad := LooksSecret(f[1]); bad {
			return "", fmt.Errorf("--%s looks like %s: never put a secret in user-data; store it in SSM under the host's prefix", f[0], reason)
		}
		b.WriteString(" --" + f[0] + " " + ShellQuote(f[1]))
	}
	b.WriteString("\n")
	return b.String(), nil
}

var shellSafe = regexp.MustCompile(`^[A-Za-z0-9_./:=@+,%-]+$`)

// ShellQuote quotes s for a POSIX shell: unchanged if it holds only safe
// characters, else in single quotes.
func ShellQuote(s string) string {
	if shellSafe.MatchString(s) {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
