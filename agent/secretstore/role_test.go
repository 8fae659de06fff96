//go:build unix

package secretstore_test

import (
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/molecule-ai/molecule-agent/agent/identity/imdstest"
	"github.com/molecule-ai/molecule-agent/agent/secretstore"
	"github.com/molecule-ai/molecule-agent/agent/secretstore/ssmtest"
)

// TestSSMWithInstanceRole runs the default credential chain as on EC2:
// instance-role credentials from IMDSv2, then SSM signed with them.
func TestSSMWithInstanceRole(t *testing.T) {
	t.Parallel()
	const akid, secret = "ASIAROLEEXAMPLE00001", "role/secret/key/EXAMPLE"
	for _, v1Only := range []bool{false, true} {
		md := imdstest.New(t, imdstest.Instance{})
		md.SetRole("molecule-agent", akid, secret, "session-token-example", time.Now().Add(time.Hour))
		md.SetV1Only(v1Only)
		s := ssmtest.New(t)
		s.AcceptKey(akid, secret)
		want := tenant(s)
		tr := &http.Transport{}
		t.Cleanup(tr.CloseIdleConnections)
		src, err := secretstore.NewSSM(t.Context(), secretstore.SSMOptions{
			Prefix: prefix, Region: ssmtest.Region, Endpoint: s.URL, IMDSEndpoint: md.URL,
			HTTPClient: &http.Client{Transport: tr}, MaxAttempts: 1,
		})
		if err != nil {
			t.Fatal(err)
		}
		got, err := src.Fetch(t.Context())
		if v1Only {
			const msg = "no aws credentials to read " + prefix + ": attach an instance profile (read over IMDSv2) or configure credentials: "
			if !errors.Is(err, secretstore.ErrNoCredentials) || !strings.HasPrefix(err.Error(), msg) || !secretstore.Transient(err) {
				t.Errorf("v1-only IMDS: Fetch error %q, want transient ErrNoCredentials starting %q", err, msg)
			}
			if md.Stats().V1Served != 0 {
				t.Errorf("v1-only IMDS answered %d tokenless requests, want none", md.Stats().V1Served)
			}
			continue
		}
		if err != nil || len(got) != len(want) {
			t.Fatalf("Fetch with role credentials = %d secrets, %v; want %d", len(got), err, len(want))
		}
		if st := md.Stats(); st.TokensIssued == 0 || st.V1Served != 0 {
			t.Errorf("imds stats %+v, want IMDSv2 tokens and no v1", st)
		}
	}
}
