//go:build unix

package main

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/molecule-ai/molecule-agent/bootstrap"
)

// paramFlags binds the host parameters shared by bootstrap and userdata.
func paramFlags(fs *pflag.FlagSet, p *bootstrap.Params) {
	fs.StringVar(&p.Role, "role", "", "tenant or workspace (default: instance tag "+bootstrap.TagRole+")")
	fs.StringVar(&p.Org, "org", "", "the tenant's org slug (default: tag "+bootstrap.TagOrg+")")
	fs.StringVar(&p.Workspace, "workspace", "", "workspace ID, for workspace hosts (default: tag "+bootstrap.TagWorkspace+")")
	fs.StringVar(&p.OrgID, "org-id", "", "the tenant's MOLECULE_ORG_ID, sent as X-Molecule-Org-Id, for workspace hosts (default: tag "+bootstrap.TagOrgID+")")
	fs.StringVar(&p.PlatformURL, "platform-url", "", "tenant platform URL, for workspace hosts (default: tag "+bootstrap.TagPlatformURL+")")
	fs.StringVar(&p.ControlPlane, "control-plane", "", "control plane base URL (default: tag "+bootstrap.TagControlPlane+")")
	fs.StringVar(&p.ControlPlaneCA, "control-plane-ca", "", "PEM file of the private CA that signs the control plane's certificate (written as control_plane.ca_file)")
	fs.StringVar(&p.SSMPrefix, "ssm-prefix", "", "SSM path of the host's secrets (default: tag "+bootstrap.TagSSMPrefix+")")
	fs.StringVar(&p.Channel, "channel", "", "image channel (default: tag "+bootstrap.TagChannel+", else "+bootstrap.DefaultChannel+")")
	fs.StringVar(&p.Region, "region", "", "AWS region for SSM (default: from IMDS)")
	fs.StringVar(&p.SSMEndpoint, "ssm-endpoint", "", "SSM endpoint URL, e.g. a VPC endpoint (default: the region's)")
	fs.StringVar(&p.Identity, "identity", "", "imds (EC2, default) or enrollment (off EC2)")
	fs.StringVar(&p.EnrollmentTokenFile, "enrollment-token-file", "", "enrollment token file, placed by the provisioner (default "+bootstrap.DefaultEnrollmentTokenFile+")")
	fs.StringVar(&p.UnitsFile, "units-file", "", "YAML file whose units: list is added to agent.yaml")
}

func newBootstrapCmd() *cobra.Command {
	var o bootstrap.Options
	cmd := &cobra.Command{
		Use:   "bootstrap",
		Short: "Configure, install and start the agent on this host, then wait until it is registered and ready (run by EC2 user-data)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			o.Out = cmd.OutOrStdout()
			res, err := bootstrap.Run(cmd.Context(), o)
			if err != nil {
				fmt.Fprintln(cmd.OutOrStdout(), bootstrap.FailedPrefix+bootstrap.OneLine(err))
				return exitError{code: 1}
			}
			fmt.Fprintf(cmd.OutOrStdout(), "MOLECULE AGENT BOOT OK in %s\n", res.Total.Round(time.Millisecond))
			return nil
		},
	}
	paramFlags(cmd.Flags(), &o.Params)
	cmd.Flags().StringVar(&o.ConfigPath, "config", defaultConfig, "where to write agent.yaml")
	cmd.Flags().DurationVar(&o.Timeout, "timeout", bootstrap.DefaultTimeout, "give up after this long")
	cmd.Flags().StringVar(&o.IMDSEndpoint, "imds-endpoint", "", "instance metadata endpoint (tests)")
	_ = cmd.Flags().MarkHidden("imds-endpoint")
	return cmd
}

func newUserdataCmd() *cobra.Command {
	var p bootstrap.Params
	cmd := &cobra.Command{
		Use:   "userdata",
		Short: "Print the EC2 user-data that boots a host (refuses any value that looks like a secret)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ud, err := bootstrap.RenderUserData(p)
			if err != nil {
				return err
			}
			_, err = fmt.Fprint(cmd.OutOrStdout(), ud)
			return err
		},
	}
	paramFlags(cmd.Flags(), &p)
	return cmd
}
