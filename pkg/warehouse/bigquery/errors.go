package bigquery

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"

	"cloud.google.com/go/bigquery"
	"google.golang.org/api/googleapi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sluicehq/sluice/pkg/vocab"
	"github.com/sluicehq/sluice/pkg/warehouse"
)

// classify turns a client error into a *warehouse.Error a user can act on.
// parent is the caller's context and ctx the one bounded by query_timeout,
// so a cancellation is told apart from the timeout.
func (s *Source) classify(parent, ctx context.Context, op string, err error) error {
	if parent.Err() != nil {
		return fmt.Errorf("%s: %w", op, parent.Err())
	}
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return &warehouse.Error{Category: vocab.CategoryTimeout, Transient: true,
			Err: fmt.Errorf("%s: exceeded query_timeout %s: %w", op, s.cfg.QueryTimeout, context.DeadlineExceeded)}
	}
	category, transient := categorize(err)
	if category == vocab.CategoryQuery && reason(err) == "bytesBilledLimitExceeded" {
		err = fmt.Errorf("query would bill more than maximum_bytes_billed (%d bytes): %w", s.cfg.MaximumBytesBilled, err)
	}
	return &warehouse.Error{Category: category, Transient: transient, Err: fmt.Errorf("%s: %w", op, err)}
}

// reason is BigQuery's error reason (invalidQuery, accessDenied, ...).
func reason(err error) string {
	var ge *googleapi.Error
	if errors.As(err, &ge) && len(ge.Errors) > 0 {
		return ge.Errors[0].Reason
	}
	var be *bigquery.Error
	if errors.As(err, &be) {
		return be.Reason
	}
	return ""
}

// categorize maps BigQuery's HTTP codes and reasons
// (https://cloud.google.com/bigquery/docs/error-messages) and the Storage
// Read API's gRPC codes to Sluice's categories.
func categorize(err error) (vocab.Category, bool) {
	switch reason(err) {
	case "authError":
		return vocab.CategoryAuthentication, false
	case "accessDenied", "billingNotEnabled", "billingTierLimitExceeded":
		return vocab.CategoryPermission, false
	case "invalidQuery", "invalid", "notFound", "duplicate", "resourcesExceeded", "responseTooLarge", "bytesBilledLimitExceeded":
		return vocab.CategoryQuery, false
	case "backendError", "internalError", "rateLimitExceeded", "jobRateLimitExceeded", "quotaExceeded", "jobBackendError", "jobInternalError":
		return vocab.CategoryConnection, true
	}
	var ge *googleapi.Error
	if errors.As(err, &ge) {
		switch {
		case ge.Code == 401:
			return vocab.CategoryAuthentication, false
		case ge.Code == 403:
			return vocab.CategoryPermission, false
		case ge.Code == 400 || ge.Code == 404:
			return vocab.CategoryQuery, false
		case ge.Code == 408 || ge.Code == 429 || ge.Code >= 500:
			return vocab.CategoryConnection, true
		}
		return vocab.CategoryQuery, false
	}
	if st, ok := status.FromError(err); ok && st.Code() != codes.Unknown {
		switch st.Code() {
		case codes.Unauthenticated:
			return vocab.CategoryAuthentication, false
		case codes.PermissionDenied:
			return vocab.CategoryPermission, false
		case codes.NotFound, codes.InvalidArgument, codes.FailedPrecondition, codes.OutOfRange:
			return vocab.CategoryQuery, false
		case codes.Unavailable, codes.ResourceExhausted, codes.Aborted, codes.Internal, codes.DeadlineExceeded:
			return vocab.CategoryConnection, true
		}
	}
	var ue *url.Error
	var ne net.Error
	if errors.As(err, &ue) || errors.As(err, &ne) {
		return vocab.CategoryConnection, true
	}
	// Credentials that cannot produce a token fail before any request.
	if msg := err.Error(); strings.Contains(msg, "oauth2") || strings.Contains(msg, "credentials") {
		return vocab.CategoryAuthentication, false
	}
	return vocab.CategoryInternal, false
}
