//go:build unix

package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
)

// SecretPrefix marks an env value or file content that names a secret.
const SecretPrefix = "secret:"

var (
	unitNameRe   = regexp.MustCompile(`^[a-z][a-z0-9-]{0,62}$`)
	envKeyRe     = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	secretNameRe = regexp.MustCompile(`^[A-Za-z0-9_.-]+(/[A-Za-z0-9_.-]+)*$`)
)

// FieldError is a validation error about one field.
type FieldError struct {
	Path string
	Msg  string
}

func (e *FieldError) Error() string { return e.Path + ": " + e.Msg }

func fieldErr(path, format string, args ...any) error {
	return &FieldError{Path: path, Msg: fmt.Sprintf(format, args...)}
}

// Validate checks the whole config and returns the first problem found,
// naming its field path.
func (c *Config) Validate() error {
	if c.Role != "" && !slices.Contains(Roles(), c.Role) {
		return fieldErr("role", "%q is not a role; use %s or leave it empty", c.Role, strings.Join(Roles(), ", "))
	}
	if !filepath.IsAbs(c.StateDir) {
		return fieldErr("state_dir", "must be an absolute path")
	}
	if !filepath.IsAbs(c.RunDir) {
		return fieldErr("run_dir", "must be an absolute path")
	}
	if c.Status.Socket != "" && !filepath.IsAbs(c.Status.Socket) {
		return fieldErr("status.socket", "must be an absolute path")
	}
	if c.Log.LinesPerSecond < 0 || c.Log.Burst < 0 || c.Log.MaxLineBytes < 0 {
		return fieldErr("log", "limits must be positive")
	}
	if err := c.Secrets.validate(); err != nil {
		return err
	}
	if err := c.Identity.validate(); err != nil {
		return err
	}
	if err := c.ControlPlane.validate(); err != nil {
		return err
	}
	if err := c.Workspace.validate(); err != nil {
		return err
	}
	if f := c.Updates.DesiredFile; f != "" && !filepath.IsAbs(f) {
		return fieldErr("updates.desired_file", "must be an absolute path")
	}
	if c.Updates.Window.Duration < 0 {
		return fieldErr("updates.window", "must be positive")
	}
	return validateUnits(c.Units)
}

func (s *Secrets) validate() error {
	switch s.Source {
	case "":
	case "ssm":
		if s.Prefix == "" {
			return fieldErr("secrets.prefix", "is required when secrets.source is ssm (e.g. /molecule/prod/tenants/acme)")
		}
		if !strings.HasPrefix(s.Prefix, "/") || strings.HasSuffix(s.Prefix, "/") || strings.Contains(s.Prefix, "//") {
			return fieldErr("secrets.prefix", "%q must start with / and not end with / (e.g. /molecule/prod/tenants/acme)", s.Prefix)
		}
		if s.Endpoint != "" {
			if err := checkURL(s.Endpoint); err != nil {
				return fieldErr("secrets.endpoint", "%v", err)
			}
		}
	case "file":
		if s.File == "" {
			return fieldErr("secrets.file", "is required when secrets.source is file")
		}
	default:
		return fieldErr("secrets.source", "%q is not a source; use ssm or file", s.Source)
	}
	if s.Refresh.Duration < 0 {
		return fieldErr("secrets.refresh", "must be positive")
	}
	if s.Jitter < 0 || s.Jitter >= 1 {
		return fieldErr("secrets.jitter", "must be between 0 and 1 (0.2 = ±20 %%)")
	}
	return nil
}

func (i *Identity) validate() error {
	switch i.Mode {
	case "", "imds":
	case "enrollment":
		if i.EnrollmentToken == "" {
			return fieldErr("identity.enrollment_token", "is required when identity.mode is enrollment (secret:<name> or file:<path>)")
		}
	default:
		return fieldErr("identity.mode", "%q is not a mode; use imds or enrollment", i.Mode)
	}
	if t := i.EnrollmentToken; t != "" && !strings.HasPrefix(t, SecretPrefix) && !strings.HasPrefix(t, "file:") {
		return fieldErr("identity.enrollment_token", "must be a reference (secret:<name> or file:<path>), never the token itself")
	}
	if i.IMDSEndpoint != "" {
		if err := checkURL(i.IMDSEndpoint); err != nil {
			return fieldErr("identity.imds_endpoint", "%v", err)
		}
	}
	return nil
}

func (cp *ControlPlane) validate() error {
	if cp.CAFile != "" && !filepath.IsAbs(cp.CAFile) {
		return fieldErr("control_plane.ca_file", "must be an absolute path to a PEM CA certificate")
	}
	if cp.URL == "" {
		if cp.CAFile != "" {
			return fieldErr("control_plane.ca_file", "is set but control_plane.url is empty")
		}
		return nil
	}
	if err := checkURL(cp.URL); err != nil {
		return fieldErr("control_plane.url", "%v", err)
	}
	u, _ := url.Parse(cp.URL)
	if u.Scheme == "http" && !isLoopback(u.Hostname()) {
		return fieldErr("control_plane.url", "%q is plain HTTP to a host that is not loopback: the host token would cross the network in clear; use https:// (with control_plane.ca_file for a private CA)", cp.URL)
	}
	if u.Scheme == "http" && cp.CAFile != "" {
		return fieldErr("control_plane.ca_file", "is set but control_plane.url is plain http: use https://")
	}
	return nil
}

// isLoopback reports whether host is localhost or a loopback IP.
func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func checkURL(s string) error {
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("%q is not an http(s) URL", s)
	}
	return nil
}

func validateUnits(units []Unit) error {
	seen := map[string]int{}
	for i := range units {
		p := fmt.Sprintf("units[%d]", i)
		u := &units[i]
		if !unitNameRe.MatchString(u.Name) {
			return fieldErr(p+".name", "%q must be lowercase letters, digits and -, starting with a letter", u.Name)
		}
		if j, dup := seen[u.Name]; dup {
			return fieldErr(p+".name", "%q is already used by units[%d]", u.Name, j)
		}
		seen[u.Name] = i
		if err := u.validate(p); err != nil {
			return err
		}
	}
	for i := range units {
		for j, dep := range units[i].After {
			p := fmt.Sprintf("units[%d].after[%d]", i, j)
			if dep == units[i].Name {
				return fieldErr(p, "unit cannot depend on itself")
			}
			if _, ok := seen[dep]; !ok {
				return fieldErr(p, "no unit named %q", dep)
			}
		}
	}
	if cycle := findCycle(units); cycle != nil {
		return fieldErr("units", "dependency cycle: %s", strings.Join(cycle, " → "))
	}
	return nil
}

func (u *Unit) validate(p string) error {
	switch u.Kind {
	case KindExec:
		if u.Command == "" && u.Builtin == "" {
			return fieldErr(p+".command", "is required for an exec unit")
		}
		if u.Container != nil {
			return fieldErr(p+".container", "is only for kind: container")
		}
	case KindContainer:
		if u.Container == nil {
			return fieldErr(p+".container", "is required for kind: container")
		}
		if err := u.Container.validate(p + ".container"); err != nil {
			return err
		}
		if err := u.Container.validateSecretFiles(p+".container", u.Env); err != nil {
			return err
		}
	default:
		return fieldErr(p+".kind", "%q is not a kind; use exec or container", u.Kind)
	}
	for j, a := range u.Args {
		if strings.Contains(a, SecretPrefix) {
			return fieldErr(fmt.Sprintf("%s.args[%d]", p, j), "secret references are not allowed in args (argv is world-readable in /proc); pass the secret in env or a file")
		}
	}
	for k, v := range u.Env {
		if !envKeyRe.MatchString(k) {
			return fieldErr(p+".env."+k, "is not a valid environment variable name")
		}
		if err := checkSecretRef(v); err != nil {
			return fieldErr(p+".env."+k, "%v", err)
		}
	}
	for j, f := range u.Files {
		fp := fmt.Sprintf("%s.files[%d]", p, j)
		if !filepath.IsAbs(f.Path) || filepath.Clean(f.Path) != f.Path {
			return fieldErr(fp+".path", "%q must be a clean absolute path", f.Path)
		}
		if f.Mode != "" {
			if m, err := strconv.ParseUint(f.Mode, 8, 32); err != nil || m > 0o777 {
				return fieldErr(fp+".mode", "%q is not an octal file mode such as \"0600\"", f.Mode)
			}
		}
		if err := checkSecretRef(f.Content); err != nil {
			return fieldErr(fp+".content", "%v", err)
		}
		if f.Owner != "" && f.Owner != OwnerAgent && f.Owner != OwnerUnit {
			return fieldErr(fp+".owner", "%q: use agent (written each start, removed at stop) or unit (kept; written only when the source has a new value)", f.Owner)
		}
	}
	if u.Dir != "" && !filepath.IsAbs(u.Dir) {
		return fieldErr(p+".dir", "must be an absolute path")
	}
	if u.Ready != nil {
		if err := u.Ready.validate(p + ".ready"); err != nil {
			return err
		}
		if u.Ready.DockerHealth && (u.Container == nil || u.Container.Healthcheck == nil) {
			return fieldErr(p+".ready.docker_health", "needs kind: container with a container.healthcheck")
		}
	}
	if _, err := ParseSignal(u.Stop.Signal); err != nil {
		return fieldErr(p+".stop.signal", "%v", err)
	}
	if u.Stop.Grace.Duration <= 0 {
		return fieldErr(p+".stop.grace", "must be positive")
	}
	return u.Restart.validate(p + ".restart")
}

func checkSecretRef(v string) error {
	if !strings.HasPrefix(v, SecretPrefix) {
		return nil
	}
	if name := strings.TrimPrefix(v, SecretPrefix); !secretNameRe.MatchString(name) {
		return fmt.Errorf("%q is not a valid secret reference; use secret:<name> with the parameter name relative to the prefix", v)
	}
	return nil
}

func (pr *Probe) validate(p string) error {
	set := 0
	for _, b := range []bool{pr.HTTP != "", pr.TCP != "", pr.DockerHealth} {
		if b {
			set++
		}
	}
	switch {
	case set > 1:
		return fieldErr(p, "set one of http, tcp or docker_health, not several")
	case pr.DockerHealth:
	case pr.HTTP != "":
		if err := checkURL(pr.HTTP); err != nil {
			return fieldErr(p+".http", "%v", err)
		}
	case pr.TCP != "":
		if _, port, err := net.SplitHostPort(pr.TCP); err != nil || port == "" {
			return fieldErr(p+".tcp", "%q is not host:port", pr.TCP)
		}
	default:
		return fieldErr(p, "set http, tcp or docker_health")
	}
	if pr.Status != 0 && (pr.Status < 100 || pr.Status > 599) {
		return fieldErr(p+".status", "%d is not an HTTP status", pr.Status)
	}
	if pr.Interval.Duration <= 0 {
		return fieldErr(p+".interval", "must be positive")
	}
	if pr.Timeout.Duration <= 0 {
		return fieldErr(p+".timeout", "must be positive")
	}
	return nil
}

func (r *Restart) validate(p string) error {
	switch r.Policy {
	case "always", "on-failure", "never":
	default:
		return fieldErr(p+".policy", "%q is not a policy; use always, on-failure or never", r.Policy)
	}
	if r.InitialDelay.Duration <= 0 {
		return fieldErr(p+".initial_delay", "must be positive")
	}
	if r.MaxDelay.Duration < r.InitialDelay.Duration {
		return fieldErr(p+".max_delay", "must be ≥ initial_delay (%s)", r.InitialDelay)
	}
	if r.StableAfter.Duration <= 0 {
		return fieldErr(p+".stable_after", "must be positive")
	}
	if r.Budget < 0 {
		return fieldErr(p+".budget", "must be positive")
	}
	if r.Window.Duration <= 0 {
		return fieldErr(p+".window", "must be positive")
	}
	for j, c := range r.NoRestartExitCodes {
		if c < 0 || c > 255 {
			return fieldErr(fmt.Sprintf("%s.no_restart_exit_codes[%d]", p, j), "%d is not an exit code (0-255)", c)
		}
	}
	return nil
}

var signals = map[string]syscall.Signal{
	"SIGTERM": syscall.SIGTERM, "SIGINT": syscall.SIGINT, "SIGQUIT": syscall.SIGQUIT,
	"SIGHUP": syscall.SIGHUP, "SIGKILL": syscall.SIGKILL, "SIGUSR1": syscall.SIGUSR1,
	"SIGUSR2": syscall.SIGUSR2,
}

// ParseSignal turns "SIGTERM" or "TERM" into a signal.
func ParseSignal(s string) (syscall.Signal, error) {
	name := strings.ToUpper(s)
	if !strings.HasPrefix(name, "SIG") {
		name = "SIG" + name
	}
	if sig, ok := signals[name]; ok {
		return sig, nil
	}
	return 0, errors.New(strconv.Quote(s) + " is not a supported signal (SIGTERM, SIGINT, SIGQUIT, SIGHUP, SIGUSR1, SIGUSR2, SIGKILL)")
}

// findCycle returns the names of a dependency cycle, or nil.
func findCycle(units []Unit) []string {
	deps := map[string][]string{}
	for _, u := range units {
		deps[u.Name] = u.After
	}
	const (
		white = iota
		grey
		black
	)
	color := map[string]int{}
	var stack []string
	var visit func(n string) []string
	visit = func(n string) []string {
		color[n] = grey
		stack = append(stack, n)
		for _, d := range deps[n] {
			switch color[d] {
			case grey:
				for i, s := range stack {
					if s == d {
						return append(append([]string{}, stack[i:]...), d)
					}
				}
			case white:
				if c := visit(d); c != nil {
					return c
				}
			}
		}
		stack = stack[:len(stack)-1]
		color[n] = black
		return nil
	}
	for _, u := range units {
		if color[u.Name] == white {
			if c := visit(u.Name); c != nil {
				return c
			}
		}
	}
	return nil
}

// SecretRefs returns the secret names a unit references in env, files and
// container secret files.
func (u *Unit) SecretRefs() []string {
	var out []string
	seen := map[string]bool{}
	add := func(v string) {
		if n, ok := strings.CutPrefix(v, SecretPrefix); ok && !seen[n] {
			seen[n] = true
			out = append(out, n)
		}
	}
	for _, v := range u.Env {
		add(v)
	}
	for _, f := range u.Files {
		add(f.Content)
	}
	if u.Container != nil {
		for _, f := range u.Container.SecretFiles {
			add(f.Secret)
		}
	}
	return out
}
