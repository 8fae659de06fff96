package provision

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	"github.com/aws/aws-sdk-go-v2/service/ssm/types"

	"github.com/molecule-ai/molecule-agent/controlplane/api/secret"
)

// ssmAPI is the part of *ssm.Client the parameter backend calls.
type ssmAPI interface {
	PutParameter(context.Context, *ssm.PutParameterInput, ...func(*ssm.Options)) (*ssm.PutParameterOutput, error)
	GetParametersByPath(context.Context, *ssm.GetParametersByPathInput, ...func(*ssm.Options)) (*ssm.GetParametersByPathOutput, error)
	DeleteParameters(context.Context, *ssm.DeleteParametersInput, ...func(*ssm.Options)) (*ssm.DeleteParametersOutput, error)
}

// Parameters writes, lists and deletes a host's SSM parameters. Every value
// is a SecureString.
type Parameters struct {
	ssm   ssmAPI
	retry Retry
	log   *slog.Logger
}

// NewParameters returns the SSM backend over client (an *ssm.Client).
// log may be nil.
func NewParameters(client ssmAPI, retry Retry, log *slog.Logger) *Parameters {
	return &Parameters{ssm: client, retry: retry, log: orDiscard(log).With("backend", "ssm")}
}

func noSSMRetry(o *ssm.Options) { o.Retryer = aws.NopRetryer{} }

// Ensure creates the parameter with value unless it exists, and reports
// whether it wrote it. A generated secret (a DB password) is written with
// Ensure, so a resumed job keeps the value the hosts already use.
func (p *Parameters) Ensure(ctx context.Context, name string, value secret.Secret) (bool, error) {
	err := p.put(ctx, name, value, false)
	if awsCode(err) == "ParameterAlreadyExists" {
		p.log.Info("parameter kept", "name", name)
		return false, nil
	}
	if err != nil {
		return false, err
	}
	p.log.Info("parameter created", "name", name)
	return true, nil
}

// Set writes the parameter, overwriting any value.
func (p *Parameters) Set(ctx context.Context, name string, value secret.Secret) error {
	if err := p.put(ctx, name, value, true); err != nil {
		return err
	}
	p.log.Info("parameter written", "name", name)
	return nil
}

func (p *Parameters) put(ctx context.Context, name string, value secret.Secret, overwrite bool) error {
	if value.IsZero() {
		return fmt.Errorf("ssm:PutParameter on %s: empty value (SSM refuses one)", name)
	}
	in := &ssm.PutParameterInput{Name: aws.String(name), Value: aws.String(value.Reveal()),
		Type: types.ParameterTypeSecureString, Overwrite: aws.Bool(overwrite), Tier: types.ParameterTierStandard}
	err := p.retry.do(ctx, p.log, "PutParameter", classifyAWS, func(ctx context.Context) error {
		_, err := p.ssm.PutParameter(ctx, in, noSSMRetry)
		return err
	})
	if err != nil && awsCode(err) != "ParameterAlreadyExists" {
		return wrapAWS("ssm:PutParameter", name, err)
	}
	return err
}

// Names lists the names of every parameter under prefix, recursively. It
// reads no value.
func (p *Parameters) Names(ctx context.Context, prefix string) ([]string, error) {
	prefix = "/" + strings.Trim(prefix, "/")
	if prefix == "/" {
		return nil, errors.New("ssm: refusing to list the whole parameter store; give an org's prefix")
	}
	in := &ssm.GetParametersByPathInput{Path: aws.String(prefix), Recursive: aws.Bool(true), MaxResults: aws.Int32(10)}
	var names []string
	for {
		var out *ssm.GetParametersByPathOutput
		err := p.retry.do(ctx, p.log, "GetParametersByPath", classifyAWS, func(ctx context.Context) (err error) {
			out, err = p.ssm.GetParametersByPath(ctx, in, noSSMRetry)
			return err
		})
		if err != nil {
			return nil, wrapAWS("ssm:GetParametersByPath", prefix, err)
		}
		for _, prm := range out.Parameters {
			names = append(names, aws.ToString(prm.Name))
		}
		if aws.ToString(out.NextToken) == "" {
			return names, nil
		}
		in.NextToken = out.NextToken
	}
}

// DeleteAll deletes every parameter under prefix and returns how many it
// deleted; a parameter already gone is not an error.
func (p *Parameters) DeleteAll(ctx context.Context, prefix string) (int, error) {
	names, err := p.Names(ctx, prefix)
	if err != nil {
		return 0, err
	}
	deleted := 0
	for batch := range slices.Chunk(names, 10) {
		var out *ssm.DeleteParametersOutput
		err := p.retry.do(ctx, p.log, "DeleteParameters", classifyAWS, func(ctx context.Context) (err error) {
			out, err = p.ssm.DeleteParameters(ctx, &ssm.DeleteParametersInput{Names: batch}, noSSMRetry)
			return err
		})
		if err != nil {
			return deleted, wrapAWS("ssm:DeleteParameters", prefix, err)
		}
		deleted += len(out.DeletedParameters)
	}
	p.log.Info("parameters deleted", "prefix", prefix, "count", deleted)
	return deleted, nil
}
