package provision

import (
	"context"
	"errors"
	"fmt"
	"net/http"

	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/smithy-go"
)

// AWS error codes the backends tell apart.
var (
	awsThrottle = map[string]bool{
		"RequestLimitExceeded": true, "Throttling": true, "ThrottlingException": true, "TooManyRequestsException": true,
		"InternalError": true, "InternalFailure": true, "InternalServerError": true, "ServiceUnavailable": true, "Unavailable": true,
	}
	awsDenied = map[string]bool{"UnauthorizedOperation": true, "AccessDeniedException": true, "AccessDenied": true}
)

// classifyAWS retries throttling, 5xx and transport failures (every call is
// idempotent, RunInstances through its ClientToken).
func classifyAWS(err error) verdict {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return verdict{}
	}
	var ae smithy.APIError
	if errors.As(err, &ae) {
		if awsThrottle[ae.ErrorCode()] {
			return verdict{retry: true}
		}
		if awsDenied[ae.ErrorCode()] {
			return verdict{}
		}
	}
	var re *awshttp.ResponseError
	if errors.As(err, &re) {
		return verdict{retry: re.HTTPStatusCode() >= http.StatusInternalServerError}
	}
	var oe *smithy.OperationError
	return verdict{retry: errors.As(err, &oe) && ae == nil}
}

// awsCode is the error code of an AWS API error, "" for another error.
func awsCode(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}

// wrapAWS wraps err from action (e.g. "ec2:RunInstances") on what, making
// a refusal ErrDenied with what to grant.
func wrapAWS(action, what string, err error) error {
	if awsDenied[awsCode(err)] {
		return fmt.Errorf("%s on %s: %w: grant %s to the control plane's role (%w)", action, what, ErrDenied, action, err)
	}
	return fmt.Errorf("%s on %s: %w", action, what, err)
}
