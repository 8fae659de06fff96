package provision_test

import (
	"bytes"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	"github.com/cloudflare/cloudflare-go/v6/option"
	"go.uber.org/goleak"

	"github.com/molecule-ai/molecule-agent/agent/secretstore/ssmtest"
	"github.com/molecule-ai/molecule-agent/controlplane/provision"
	"github.com/molecule-ai/molecule-agent/controlplane/provision/cftest"
	"github.com/molecule-ai/molecule-agent/controlplane/provision/ec2test"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fast is a retry policy for tests: real backoff, tiny bounds.
var fast = provision.Retry{Attempts: 4, Min: time.Millisecond, Max: 5 * time.Millisecond}

// logBuf collects a backend's log lines (debug included) for the secret scan.
type logBuf struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuf) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuf) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func newLog() (*slog.Logger, *logBuf) {
	b := &logBuf{}
	return slog.New(slog.NewJSONHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug})), b
}

func httpClient(t *testing.T) *http.Client {
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

func ec2Client(t *testing.T, s *ec2test.Server) *ec2.Client {
	return ec2.New(ec2.Options{Region: ec2test.Region, BaseEndpoint: aws.String(s.URL), Credentials: s.Credentials(), HTTPClient: httpClient(t)})
}

func ssmClient(t *testing.T, s *ssmtest.Server) *ssm.Client {
	return ssm.New(ssm.Options{Region: ssmtest.Region, BaseEndpoint: aws.String(s.URL), Credentials: s.Credentials(), HTTPClient: httpClient(t)})
}

func cloudflare(t *testing.T, s *cftest.Server, log *slog.Logger) *provision.Cloudflare {
	t.Helper()
	c, err := provision.NewCloudflare(provision.CloudflareConfig{AccountID: cftest.AccountID, ZoneID: cftest.ZoneID, Domain: cftest.ZoneName},
		fast, log, option.WithBaseURL(s.URL), option.WithAPIToken(cftest.Token), option.WithHTTPClient(httpClient(t)))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// noSecrets fails if any secret appears in text.
func noSecrets(t *testing.T, where, text string, secrets ...string) {
	t.Helper()
	for _, s := range secrets {
		if s != "" && strings.Contains(text, s) {
			t.Errorf("%s holds a secret value", where)
		}
	}
}
