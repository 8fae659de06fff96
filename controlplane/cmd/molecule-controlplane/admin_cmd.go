package main

import (
	"encoding/json"
	"fmt"
	"io"

	"github.com/spf13/cobra"

	"github.com/molecule-ai/molecule-agent/controlplane/api"
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

// client returns the api client for the admin API, with the admin token.
// Its retries follow api's retry policy: idempotent calls on transport
// errors and 429/502/503/504, non-idempotent ones (rollout start, token
// create) only when the server cannot have acted on them.
func (o *adminOpts) client(e env) (*api.Client, error) {
	tok, err := adminToken(o.tokenFile, e)
	if err != nil {
		return nil, err
	}
	c, err := api.New(api.Options{BaseURL: o.url, AdminToken: tok})
	if err != nil {
		return nil, fmt.Errorf("--url %q: want http(s)://host:port", o.url)
	}
	return c, nil
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
