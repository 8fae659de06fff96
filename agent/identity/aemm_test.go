//go:build unix

package identity_test

import (
	"context"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/molecule-ai/molecule-agent/agent/identity"
	"github.com/molecule-ai/molecule-agent/controlplane/api/testenv"
)

// aemmTool is AWS's amazon-ec2-metadata-mock, pinned as a tool in go.mod.
const aemmTool = "github.com/aws/amazon-ec2-metadata-mock/cmd/ec2-metadata-mock"

// buildAEMM builds the mock at the version pinned in go.mod.
func buildAEMM(t *testing.T) string {
	t.Helper()
	gobin := testenv.RequireBinary(t, "go")
	bin := filepath.Join(t.TempDir(), "ec2-metadata-mock")
	ctx, cancel := context.WithTimeout(t.Context(), testenv.Long)
	defer cancel()
	if out, err := exec.CommandContext(ctx, gobin, "build", "-o", bin, aemmTool).CombinedOutput(); err != nil {
		t.Fatalf("go build %s: %v\n%s", aemmTool, err, out)
	}
	return bin
}

// startAEMM runs the mock with IMDSv2 required on a free loopback port and
// returns its endpoint once it issues tokens.
func startAEMM(t *testing.T, bin string, args ...string) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
	_ = l.Close()
	logf, err := os.Create(filepath.Join(t.TempDir(), "aemm.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, append(args, "--imdsv2", "--port", port, "--hostname", "127.0.0.1")...)
	cmd.Env = []string{"HOME=" + t.TempDir(), "PATH=/usr/bin:/bin"}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatalf("start ec2-metadata-mock: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		_ = logf.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logf.Name())
			t.Logf("ec2-metadata-mock log:\n%.4000s", b)
		}
	})
	url := "http://127.0.0.1:" + port
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	hc := &http.Client{Transport: tr, Timeout: time.Second}
	deadline := time.Now().Add(testenv.Short)
	for {
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodPut, url+"/latest/api/token", nil)
		req.Header.Set("X-aws-ec2-metadata-token-ttl-seconds", "60")
		if resp, err := hc.Do(req); err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return url
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("ec2-metadata-mock did not start issuing tokens")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestAgainstAEMM is the smoke test against AWS's own IMDS mock: identity,
// tags, 401 without a token, and both interruption notices.
func TestAgainstAEMM(t *testing.T) {
	bin := buildAEMM(t)
	tr := &http.Transport{}
	t.Cleanup(tr.CloseIdleConnections)
	hc := &http.Client{Transport: tr}

	t.Run("identity and spot", func(t *testing.T) {
		url := startAEMM(t, bin)
		resp, err := hc.Get(url + "/latest/meta-data/instance-id")
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("tokenless GET = %d, want 401", resp.StatusCode)
		}

		c := identity.New(identity.Options{Endpoint: url, HTTPClient: hc})
		id, err := c.Identity(t.Context())
		if err != nil {
			t.Fatalf("Identity: %v", err)
		}
		if id.InstanceID != "i-1234567890abcdef0" || id.Region != "us-east-1" || id.AccountID != "0123456789" ||
			id.AvailabilityZone == "" || net.ParseIP(id.PrivateIPv4) == nil || len(id.Document) == 0 || id.PKCS7 == "" {
			t.Errorf("Identity = %+v, want AEMM's defaults", id)
		}
		if id.Tags["Name"] != "test-instance" {
			t.Errorf("Tags = %v, want Name=test-instance", id.Tags)
		}
		n, err := c.Watch(t.Context(), 10*time.Millisecond)
		if err != nil || n.Kind != identity.SpotInterruption || n.Action != "terminate" || n.Time.IsZero() {
			t.Errorf("Watch = %+v, %v; want a spot terminate notice with a time", n, err)
		}
	})

	t.Run("asg lifecycle", func(t *testing.T) {
		url := startAEMM(t, bin, "asglifecycle")
		n, err := identity.New(identity.Options{Endpoint: url, HTTPClient: hc}).Watch(t.Context(), 10*time.Millisecond)
		if err != nil || n.Kind != identity.ASGTerminate || n.Action != "Terminated" {
			t.Errorf("Watch = %+v, %v; want asg-terminate Terminated", n, err)
		}
	})
}
