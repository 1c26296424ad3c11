package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/sluicehq/sluice/pkg/store"
)

// ClaimNotifications claims due runs; see store.Store. SKIP LOCKED lets
// concurrent claims take disjoint runs instead of waiting on each other.
func (s *Store) ClaimNotifications(ctx context.Context, c store.NotificationClaim) ([]store.Run, error) {
	rows, err := s.pool.Query(ctx, s.q(`UPDATE {s}.runs SET notify_owner = $2, notify_until = $4
		FROM (SELECT project AS claim_project, run_id AS claim_run FROM {s}.runs
			WHERE notify_state = 'due' AND project = ANY($1) AND (notify_until IS NULL OR notify_until <= $3)
			ORDER BY updated_at, run_id LIMIT $5 FOR UPDATE SKIP LOCKED) due
		WHERE project = claim_project AND run_id = claim_run
		RETURNING `+runColumns), c.Projects, c.Owner, c.At, c.At.Add(c.Lease), c.Limit)
	if err != nil {
		return nil, fmt.Errorf("claim notifications for %s: %w", c.Owner, err)
	}
	defer rows.Close()
	var runs []store.Run
	for rows.Next() {
		r, err := scanRun(rows)
		if err != nil {
			return nil, fmt.Errorf("claim notifications for %s: %w", c.Owner, err)
		}
		runs = append(runs, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("claim notifications for %s: %w", c.Owner, err)
	}
	store.SortNotifications(runs)
	return runs, nil
}

// MarkNotified ends a run's notification.
func (s *Store) MarkNotified(ctx context.Context, project, runID string, at time.Time) error {
	if _, err := s.pool.Exec(ctx, s.q(`UPDATE {s}.runs SET notify_state = 'sent', notified_at = $3,
		notify_owner = '', notify_until = NULL
		WHERE project = $1 AND run_id = $2 AND notify_state = 'due'`), project, runID, at); err != nil {
		return fmt.Errorf("mark run %s of %s notified: %w", runID, project, err)
	}
	return nil
}

// ReleaseNotifications gives back owner's claims.
func (s *Store) ReleaseNotifications(ctx context.Context, owner string) error {
	if _, err := s.pool.Exec(ctx, s.q(`UPDATE {s}.runs SET notify_owner = '', notify_until = NULL
		WHERE notify_owner = $1 AND notify_state = 'due'`), owner); err != nil {
		return fmt.Errorf("release notifications of %s: %w", owner, err)
	}
	return nil
}
