// Package systemd embeds the molecule-agent systemd unit and renders it as
// the kardianos/service template that `molecule-agent bootstrap` installs.
package systemd

import (
	_ "embed"
	"fmt"
	"regexp"
	"strings"
	"text/template"
)

// Name is the service name; the unit file is Name + ".service".
const Name = "molecule-agent"

// Unit is molecule-agent.service as shipped, with ExecStart pointing at
// /usr/local/bin/molecule-agent.
//
//go:embed molecule-agent.service
var Unit string

// execLine is the kardianos/service template for ExecStart. It uses only
// the .Path and .Arguments fields and no template functions, so Render
// produces exactly what kardianos writes.
const execLine = "ExecStart={{.Path}}{{range .Arguments}} {{.}}{{end}}"

var execStartRE = regexp.MustCompile(`(?m)^ExecStart=.*$`)

// Template returns the unit as a kardianos/service SystemdScript template:
// the shipped unit with its ExecStart line filled from the service config.
func Template() string {
	return execStartRE.ReplaceAllLiteralString(Unit, execLine)
}

// safeWord matches what may appear in ExecStart unquoted: systemd would
// otherwise split or expand it ($, %, quotes, spaces, backslashes).
var safeWord = regexp.MustCompile(`^[A-Za-z0-9_./:=@+,-]+$`)

// CheckExec refuses an executable path or argument that would need quoting
// in a unit file. Callers use it before handing them to kardianos, whose
// template here does no escaping.
func CheckExec(path string, args []string) error {
	if !strings.HasPrefix(path, "/") {
		return fmt.Errorf("executable %q: must be an absolute path", path)
	}
	for _, w := range append([]string{path}, args...) {
		if !safeWord.MatchString(w) {
			return fmt.Errorf("unit ExecStart word %q: use only letters, digits and _./:=@+,-", w)
		}
	}
	return nil
}

// Render returns the unit file kardianos writes for path and args.
func Render(path string, args []string) (string, error) {
	if err := CheckExec(path, args); err != nil {
		return "", err
	}
	t, err := template.New(Name).Parse(Template())
	if err != nil {
		return "", fmt.Errorf("unit template: %w", err)
	}
	var b strings.Builder
	data := struct {
		Path      string
		Arguments []string
	}{path, args}
	if err := t.Execute(&b, data); err != nil {
		return "", fmt.Errorf("render unit: %w", err)
	}
	return b.String(), nil
}
