package duckdb

import (
	"context"
	"database/sql"
	"fmt"
	"strings"
	"time"

	"github.com/sluicehq/sluice/pkg/store"
)

// ClaimNotifications claims due runs; see store.Store.
func (s *Store) ClaimNotifications(ctx context.Context, c store.NotificationClaim) ([]store.Run, error) {
	if len(c.Projects) == 0 {
		return nil, nil
	}
	in := strings.TrimSuffix(strings.Repeat("?,", len(c.Projects)), ",")
	args := []any{c.Owner, c.At.Add(c.Lease)}
	for _, p := range c.Projects {
		args = append(args, p)
	}
	args = append(args, c.At, c.Limit)
	var runs []store.Run
	err := s.write(ctx, func(conn *sql.Conn) error {
		rows, err := conn.QueryContext(ctx, `UPDATE runs SET notify_owner = ?, notify_until = ?
			WHERE rowid IN (SELECT rowid FROM runs
				WHERE notify_state = 'due' AND project IN (`+in+`) AND (notify_until IS NULL OR notify_until <= ?)
				ORDER BY updated_at, run_id LIMIT ?)
			RETURNING `+runColumns, args...)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			r, err := scanRun(rows)
			if err != nil {
				return err
			}
			runs = append(runs, r)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fmt.Errorf("claim notifications for %s: %w", c.Owner, err)
	}
	store.SortNotifications(runs)
	return runs, nil
}

// MarkNotified ends a run's notification.
func (s *Store) MarkNotified(ctx context.Context, project, runID string, at time.Time) error {
	err := s.write(ctx, func(c *sql.Conn) error {
		_, err := c.ExecContext(ctx, `UPDATE runs SET notify_state = 'sent', notified_at = ?,
			notify_owner = '', notify_until = NULL
			WHERE project = ? AND run_id = ? AND notify_state = 'due'`, at, project, runID)
		return err
	})
	if err != nil {
		return fmt.Errorf("mark run %s of %s notified: %w", runID, project, err)
	}
	return nil
}

// ReleaseNotifications gives back owner's claims.
func (s *Store) ReleaseNotifications(ctx context.Context, owner string) error {
	err := s.write(ctx, func(c *sql.Conn) error {
		_, err := c.ExecContext(ctx, `UPDATE runs SET notify_owner = '', notify_until = NULL
			WHERE notify_owner = ? AND notify_state = 'due'`, owner)
		return err
	})
	if err != nil {
		return fmt.Errorf("release notifications of %s: %w", owner, err)
	}
	return nil
}
