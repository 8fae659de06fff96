package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/molecule-ai/molecule-agent/controlplane/api"
	"github.com/molecule-ai/molecule-agent/controlplane/api/secret"
)

// adminOpts are the flags every admin subcommand shares.
type adminOpts struct {
	url, tokenFile string
	json           bool
}

func (o *adminOpts) flags(cmd *cobra.Command) {
	f := cmd.PersistentFlags()
	f.StringVar(&o.url, "url", "http://127.0.0.1:7070", "the control plane's base URL")
	f.StringVar(&o.tokenFile, "admin-token-file", "", "file holding the admin token (else $MOLECULE_CP_ADMIN_TOKEN)")
	f.BoolVar(&o.json, "json", false, "print JSON instead of a table")
}

// adminClient talks to the admin API with the admin token.
type adminClient struct {
	base  string
	token secret.Secret
	hc    *http.Client
	api   *api.Client
}

func (o *adminOpts) client(e env) (*adminClient, error) {
	tok, err := adminToken(o.tokenFile, e)
	if err != nil {
		return nil, err
	}
	u, err := url.Parse(o.url)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("--url %q: want http(s)://host:port", o.url)
	}
	c, err := api.New(api.Options{BaseURL: o.url, AdminToken: tok, RequestTimeout: 30 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("--url: %w", err)
	}
	return &adminClient{base: strings.TrimRight(o.url, "/"), token: tok, hc: &http.Client{Timeout: 30 * time.Second}, api: c}, nil
}

// do calls the admin API; a non-2xx reply becomes an error with the
// server's message.
func (c *adminClient) do(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("encode request: %w", err)
		}
		body = strings.NewReader(string(b))
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return fmt.Errorf("build request: %w", err)
	}
	req.Header.Set("Authorization", "Bearer "+c.token.Reveal())
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("%s %s: %w", method, path, err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return fmt.Errorf("%s %s: read reply: %w", method, path, err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		var e api.Error
		_ = json.Unmarshal(b, &e)
		if e.Error == "" {
			e.Error = http.StatusText(resp.StatusCode)
		}
		return fmt.Errorf("control plane answered %d: %s", resp.StatusCode, e.Error)
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return fmt.Errorf("%s %s: decode reply: %w", method, path, err)
		}
	}
	return nil
}

func printJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// adminCmds returns the admin subcommands: hosts, release and events.
func adminCmds(e env) []*cobra.Command {
	return []*cobra.Command{hostsCmd(e), releaseCmd(e), eventsCmd(e)}
}
