// Package ami holds the Packer template of the molecule host AMI; its test
// checks the template parses, is in canonical (packer fmt) form, and keeps
// the settings the fleet relies on.
package ami

import (
	"bytes"
	"os"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/hashicorp/hcl/v2/hclwrite"
)

const template = "molecule-agent.pkr.hcl"

func TestTemplateFormatted(t *testing.T) {
	src, err := os.ReadFile(template)
	if err != nil {
		t.Fatal(err)
	}
	if _, diags := hclsyntax.ParseConfig(src, template, hcl.InitialPos); diags.HasErrors() {
		t.Fatalf("%s does not parse: %v", template, diags)
	}
	// packer fmt is hclwrite.Format.
	if got := hclwrite.Format(src); !bytes.Equal(got, src) {
		t.Errorf("%s is not packer fmt-clean; formatted it reads:\n%s", template, got)
	}
}

func TestTemplateSettings(t *testing.T) {
	src, err := os.ReadFile(template)
	if err != nil {
		t.Fatal(err)
	}
	f, diags := hclsyntax.ParseConfig(src, template, hcl.InitialPos)
	if diags.HasErrors() {
		t.Fatal(diags)
	}
	body := f.Body.(*hclsyntax.Body)
	src2 := findBlock(t, body, "source", "amazon-ebs", "ubuntu")
	md := findBlock(t, src2.Body, "metadata_options")
	want := map[string]string{
		"http_tokens":                 `"required"`,
		"http_put_response_hop_limit": `1`,
		"http_endpoint":               `"enabled"`,
		"instance_metadata_tags":      `"enabled"`,
	}
	for name, v := range want {
		a, ok := md.Body.Attributes[name]
		if !ok {
			t.Errorf("metadata_options.%s missing", name)
			continue
		}
		if got := string(a.Expr.Range().SliceBytes(src)); got != v {
			t.Errorf("metadata_options.%s = %s, want %s", name, got, v)
		}
	}
	filter := string(findBlock(t, src2.Body, "source_ami_filter").Range().SliceBytes(src))
	if !strings.Contains(filter, "ubuntu-noble-24.04") {
		t.Errorf("source AMI is not Ubuntu 24.04:\n%s", filter)
	}
	build := string(findBlock(t, body, "build").Range().SliceBytes(src))
	for _, step := range []string{"/tmp/molecule-agent.deb", "docker.io", "docker pull", "cloud-init clean", "docker logout"} {
		if !strings.Contains(build, step) {
			t.Errorf("build lacks %q", step)
		}
	}
	if strings.Contains(build, "sh -x") || strings.Contains(build, "set -x") {
		t.Errorf("build enables shell tracing")
	}
}

func findBlock(t *testing.T, b *hclsyntax.Body, typ string, labels ...string) *hclsyntax.Block {
	t.Helper()
	for _, blk := range b.Blocks {
		if blk.Type == typ && strings.Join(blk.Labels, "/") == strings.Join(labels, "/") {
			return blk
		}
	}
	t.Fatalf("no %s %v block", typ, labels)
	return nil
}
