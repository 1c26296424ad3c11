package postgres

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/sluicehq/sluice/pkg/vocab"
	"github.com/sluicehq/sluice/pkg/warehouse"
)

// categorize gives err the category a user can act on, from its SQLSTATE
// where the server sent one. A cancelled caller context passes through
// as itself; the query timeout is QUERY_TIMEOUT.
func (s *Source) categorize(parent context.Context, err error) error {
	if err == nil {
		return nil
	}
	if parent.Err() != nil && errors.Is(err, context.Canceled) {
		return parent.Err()
	}
	return &warehouse.Error{Category: category(err), Transient: transient(err), Err: redact(err, s.secret)}
}

func category(err error) vocab.Category {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		code := pe.Code
		switch {
		case strings.HasPrefix(code, "28"):
			return vocab.CategoryAuthentication
		case code == "42501":
			return vocab.CategoryPermission
		case code == "57014":
			return vocab.CategoryTimeout
		case code == "3D000": // the database does not exist
			return vocab.CategoryConfig
		case strings.HasPrefix(code, "08"), strings.HasPrefix(code, "53"), strings.HasPrefix(code, "57P"), strings.HasPrefix(code, "40"):
			return vocab.CategoryConnection
		case strings.HasPrefix(code, "XX"):
			return vocab.CategoryInternal
		default: // 42 syntax/undefined objects, 22 data, 0A unsupported, ...
			return vocab.CategoryQuery
		}
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return vocab.CategoryTimeout
	}
	var ne net.Error
	var ce *pgconn.ConnectError
	if errors.As(err, &ne) || errors.As(err, &ce) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || pgconn.SafeToRetry(err) {
		return vocab.CategoryConnection
	}
	return vocab.CategoryInternal
}

func transient(err error) bool {
	switch category(err) {
	case vocab.CategoryConnection, vocab.CategoryTimeout:
		return true
	}
	return false
}

// redactedError hides secret in err's message and keeps err for errors.Is/As.
type redactedError struct {
	msg string
	err error
}

func (e *redactedError) Error() string { return e.msg }
func (e *redactedError) Unwrap() error { return e.err }

func redact(err error, secret string) error {
	if err == nil || secret == "" || !strings.Contains(err.Error(), secret) {
		return err
	}
	return &redactedError{msg: strings.ReplaceAll(err.Error(), secret, "xxxxx"), err: err}
}
