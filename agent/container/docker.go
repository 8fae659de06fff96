//go:build unix

package container

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/distribution/reference"
)

// Client is the agent's Docker Engine API client: the dozen endpoints the
// driver uses, spoken over the engine's socket with encoding/json. It
// replaces the docker/docker client module, which linked OpenTelemetry, the
// swarm and plugin types and a second HTTP stack into every agent
// (docs in the README's "Performance" section). The Engine API is versioned
// and stable; the client asks for min(maxAPIVersion, the engine's version)
// so engines from 20.10 (API 1.41) to today's work, and every field it
// sends exists since API 1.41.
type Client struct {
	hc   *http.Client
	host string // URL host ("docker" for a unix socket)

	mu      sync.Mutex
	version string // negotiated API version, "" until the first request
}

// maxAPIVersion is the newest Engine API the client speaks. Engines from
// Docker 29 on refuse versions below 1.44; older ones do not know 1.44.
const maxAPIVersion = "1.44"

// NewClient connects to the local engine: DOCKER_HOST (unix:// or
// tcp:// without TLS) or /var/run/docker.sock. No request is made until the
// first call, which negotiates the API version.
func NewClient() (*Client, error) {
	host := os.Getenv("DOCKER_HOST")
	if host == "" {
		host = "unix:///var/run/docker.sock"
	}
	if os.Getenv("DOCKER_TLS_VERIFY") != "" || os.Getenv("DOCKER_CERT_PATH") != "" {
		return nil, errors.New("docker client: TLS to the engine (DOCKER_TLS_VERIFY, DOCKER_CERT_PATH) is not supported: use the local socket")
	}
	u, err := url.Parse(host)
	if err != nil {
		return nil, fmt.Errorf("docker client: DOCKER_HOST %q: %w", host, err)
	}
	tr := &http.Transport{MaxIdleConnsPerHost: 4, IdleConnTimeout: 30 * time.Second, DisableCompression: true}
	c := &Client{hc: &http.Client{Transport: tr}}
	switch u.Scheme {
	case "unix":
		path := u.Path
		if path == "" {
			return nil, fmt.Errorf("docker client: DOCKER_HOST %q names no socket path", host)
		}
		var d net.Dialer
		tr.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
			return d.DialContext(ctx, "unix", path)
		}
		c.host = "docker"
	case "tcp", "http":
		if u.Host == "" {
			return nil, fmt.Errorf("docker client: DOCKER_HOST %q names no host:port", host)
		}
		c.host = u.Host
	default:
		return nil, fmt.Errorf("docker client: DOCKER_HOST %q: scheme %q is not supported (use unix:// or tcp://)", host, u.Scheme)
	}
	return c, nil
}

// Close drops the client's idle connections to the engine. Calls in
// flight are not affected; the client stays usable.
func (c *Client) Close() { c.hc.CloseIdleConnections() }

// engineError is an error status from the engine, with its message.
type engineError struct {
	status int
	msg    string
}

func (e *engineError) Error() string {
	return "docker engine: " + e.msg + " (HTTP " + strconv.Itoa(e.status) + ")"
}

// IsNotFound reports whether err is the engine saying the object does not
// exist.
func IsNotFound(err error) bool { return hasStatus(err, http.StatusNotFound) }

// IsConflict reports whether err is the engine refusing a name in use or a
// removal already in progress.
func IsConflict(err error) bool { return hasStatus(err, http.StatusConflict) }

func hasStatus(err error, code int) bool {
	var e *engineError
	return errors.As(err, &e) && e.status == code
}

// negotiate returns the API version path prefix, asking the engine's /_ping
// once.
func (c *Client) negotiate(ctx context.Context) (string, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.version != "" {
		return c.version, nil
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+c.host+"/_ping", nil)
	if err != nil {
		return "", err
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return "", fmt.Errorf("docker engine unreachable: %w", err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	v := resp.Header.Get("Api-Version")
	if v == "" {
		v = "1.41" // engines before API 1.25 are out of support
	}
	if versionLess(maxAPIVersion, v) {
		v = maxAPIVersion
	}
	c.version = v
	return v, nil
}

// versionLess compares "1.41"-style versions.
func versionLess(a, b string) bool {
	am, an, _ := strings.Cut(a, ".")
	bm, bn, _ := strings.Cut(b, ".")
	ai, _ := strconv.Atoi(am)
	bi, _ := strconv.Atoi(bm)
	if ai != bi {
		return ai < bi
	}
	ax, _ := strconv.Atoi(an)
	bx, _ := strconv.Atoi(bn)
	return ax < bx
}

// do sends one request; in and out are JSON bodies (nil: none). A status
// of 400 or more is an *engineError. When out is a **http.Response the
// caller gets the open response and must close its body.
func (c *Client) do(ctx context.Context, method, path string, q url.Values, hdr http.Header, in, out any) error {
	v, err := c.negotiate(ctx)
	if err != nil {
		return err
	}
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	u := url.URL{Scheme: "http", Host: c.host, Path: "/v" + v + path, RawQuery: q.Encode()}
	req, err := http.NewRequestWithContext(ctx, method, u.String(), body)
	if err != nil {
		return err
	}
	for k, vs := range hdr {
		req.Header[k] = vs
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return err
	}
	if resp.StatusCode >= 400 {
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		var m struct {
			Message string `json:"message"`
		}
		if json.Unmarshal(b, &m) != nil || m.Message == "" {
			m.Message = strings.TrimSpace(string(b))
		}
		return &engineError{status: resp.StatusCode, msg: m.Message}
	}
	if r, ok := out.(**http.Response); ok {
		*r = resp
		return nil
	}
	defer resp.Body.Close()
	if out != nil {
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			return fmt.Errorf("decode %s %s: %w", method, path, err)
		}
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	return nil
}

// containerSummary is one entry of a container list.
type containerSummary struct {
	ID     string            `json:"Id"`
	State  string            `json:"State"`
	Labels map[string]string `json:"Labels"`
}

// listContainers returns every container (running or not) carrying all of
// labels ("key=value").
func (c *Client) listContainers(ctx context.Context, labels ...string) ([]containerSummary, error) {
	f := map[string]map[string]bool{"label": {}}
	for _, l := range labels {
		f["label"][l] = true
	}
	fj, _ := json.Marshal(f) // plain data: cannot fail
	var out []containerSummary
	err := c.do(ctx, http.MethodGet, "/containers/json", url.Values{"all": {"1"}, "filters": {string(fj)}}, nil, nil, &out)
	return out, err
}

// healthConfig is a container's healthcheck (durations in nanoseconds, as
// the Engine API takes them).
type healthConfig struct {
	Test        []string      `json:",omitempty"`
	Interval    time.Duration `json:",omitempty"`
	Timeout     time.Duration `json:",omitempty"`
	StartPeriod time.Duration `json:",omitempty"`
	Retries     int           `json:",omitempty"`
}

type portBinding struct {
	HostIP   string `json:"HostIp"`
	HostPort string `json:"HostPort"`
}

type mountSpec struct {
	Type     string `json:"Type"`
	Source   string `json:"Source"`
	Target   string `json:"Target"`
	ReadOnly bool   `json:"ReadOnly,omitempty"`
}

type hostConfig struct {
	PortBindings  map[string][]portBinding `json:"PortBindings,omitempty"`
	NetworkMode   string                   `json:"NetworkMode,omitempty"`
	RestartPolicy struct{ Name string }    `json:"RestartPolicy"`
	LogConfig     struct {
		Type   string
		Config map[string]string
	} `json:"LogConfig"`
	Mounts []mountSpec `json:"Mounts,omitempty"`
}

type endpointSettings struct {
	Aliases []string `json:"Aliases,omitempty"`
}

// createRequest is the body of POST /containers/create.
type createRequest struct {
	Image            string              `json:"Image"`
	Env              []string            `json:"Env"`
	Cmd              []string            `json:"Cmd,omitempty"`
	User             string              `json:"User,omitempty"`
	Labels           map[string]string   `json:"Labels"`
	StopSignal       string              `json:"StopSignal,omitempty"`
	StopTimeout      *int                `json:"StopTimeout,omitempty"`
	ExposedPorts     map[string]struct{} `json:"ExposedPorts,omitempty"`
	Healthcheck      *healthConfig       `json:"Healthcheck,omitempty"`
	HostConfig       hostConfig          `json:"HostConfig"`
	NetworkingConfig *struct {
		EndpointsConfig map[string]endpointSettings
	} `json:"NetworkingConfig,omitempty"`
}

// createContainer creates (not starts) a container named name.
func (c *Client) createContainer(ctx context.Context, name string, r *createRequest) (id string, warnings []string, err error) {
	var out struct {
		ID       string   `json:"Id"`
		Warnings []string `json:"Warnings"`
	}
	err = c.do(ctx, http.MethodPost, "/containers/create", url.Values{"name": {name}}, nil, r, &out)
	return out.ID, out.Warnings, err
}

func (c *Client) startContainer(ctx context.Context, id string) error {
	return c.do(ctx, http.MethodPost, "/containers/"+id+"/start", nil, nil, nil, nil)
}

// stopContainer stops id with its stop signal, killing it after secs.
func (c *Client) stopContainer(ctx context.Context, id string, secs int) error {
	return c.do(ctx, http.MethodPost, "/containers/"+id+"/stop", url.Values{"t": {strconv.Itoa(secs)}}, nil, nil, nil)
}

// removeContainer force-removes id, keeping its named volumes.
func (c *Client) removeContainer(ctx context.Context, id string) error {
	return c.do(ctx, http.MethodDelete, "/containers/"+id, url.Values{"force": {"1"}, "v": {"0"}}, nil, nil, nil)
}

// containerState is the part of a container's inspect the agent reads.
type containerState struct {
	ID    string `json:"Id"`
	State *struct {
		Running   bool
		OOMKilled bool
		Health    *struct {
			Status string
			Log    []struct{ ExitCode int }
		}
	}
}

func (c *Client) inspectContainer(ctx context.Context, id string) (containerState, error) {
	var out containerState
	err := c.do(ctx, http.MethodGet, "/containers/"+id+"/json", nil, nil, nil, &out)
	return out, err
}

// waitResult is how a container stopped running.
type waitResult struct {
	StatusCode int64
	Error      *struct{ Message string }
}

// waitContainer blocks until id is not running (at once if it is not) or
// ctx ends.
func (c *Client) waitContainer(ctx context.Context, id string) (waitResult, error) {
	var out waitResult
	err := c.do(ctx, http.MethodPost, "/containers/"+id+"/wait", url.Values{"condition": {"not-running"}}, nil, nil, &out)
	return out, err
}

func (c *Client) imageExists(ctx context.Context, ref string) error {
	return c.do(ctx, http.MethodGet, "/images/"+ref+"/json", nil, nil, nil, nil)
}

// pullImage starts pulling ref with auth (zero: anonymous) and returns the
// progress stream (JSON messages), which the caller reads and closes.
func (c *Client) pullImage(ctx context.Context, ref string, auth AuthConfig) (io.ReadCloser, error) {
	named, err := reference.ParseNormalizedNamed(ref)
	if err != nil {
		return nil, fmt.Errorf("parse image %q: %w", ref, err)
	}
	tag := "latest"
	switch r := named.(type) {
	case reference.Digested:
		tag = r.Digest().String()
	case reference.Tagged:
		tag = r.Tag()
	}
	hdr := http.Header{}
	if auth != (AuthConfig{}) {
		b, _ := json.Marshal(auth) // plain strings: cannot fail
		hdr.Set("X-Registry-Auth", base64.URLEncoding.EncodeToString(b))
	}
	var resp *http.Response
	q := url.Values{"fromImage": {reference.FamiliarName(named)}, "tag": {tag}}
	if err := c.do(ctx, http.MethodPost, "/images/create", q, hdr, nil, &resp); err != nil {
		return nil, err
	}
	return resp.Body, nil
}

// removeImage removes ref (not forced) and its untagged parents.
func (c *Client) removeImage(ctx context.Context, ref string) error {
	return c.do(ctx, http.MethodDelete, "/images/"+ref, url.Values{"force": {"0"}, "noprune": {"0"}}, nil, nil, nil)
}

func (c *Client) volumeExists(ctx context.Context, name string) error {
	return c.do(ctx, http.MethodGet, "/volumes/"+name, nil, nil, nil, nil)
}

func (c *Client) createVolume(ctx context.Context, name string, labels map[string]string) error {
	in := struct {
		Name   string
		Labels map[string]string
	}{name, labels}
	return c.do(ctx, http.MethodPost, "/volumes/create", nil, nil, in, nil)
}

func (c *Client) networkExists(ctx context.Context, name string) error {
	return c.do(ctx, http.MethodGet, "/networks/"+name, nil, nil, nil, nil)
}

// createNetwork creates a bridge network. CheckDuplicate makes engines
// before API 1.44 refuse a second network of the same name (409), as newer
// ones always do.
func (c *Client) createNetwork(ctx context.Context, name string, labels map[string]string) error {
	in := struct {
		Name           string
		Driver         string
		CheckDuplicate bool
		Labels         map[string]string
	}{name, "bridge", true, labels}
	return c.do(ctx, http.MethodPost, "/networks/create", nil, nil, in, nil)
}

// AuthConfig is the registry login sent with a pull (the Engine API's
// X-Registry-Auth). It holds a secret: never log it.
type AuthConfig struct {
	Username      string `json:"username,omitempty"`
	Password      string `json:"password,omitempty"`
	IdentityToken string `json:"identitytoken,omitempty"`
	ServerAddress string `json:"serveraddress,omitempty"`
}
