package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/sluicehq/sluice/pkg/notify"
	"github.com/sluicehq/sluice/pkg/vocab"
)

// receiver is the project's webhook: an HTTP server on 127.0.0.1 in the
// suite's process that counts every POST by its notification id
// (notify.HeaderID) and answers 200.
type receiver struct {
	url string
	srv *http.Server

	mu  sync.Mutex
	got map[string][]time.Time // notification id → when each POST of it arrived
	// disrupted are the moments a notifier could have died between a POST
	// and its MarkNotified: a SIGKILL of a process running one, a
	// PostgreSQL restart (the mark fails). A repeat with one of them
	// between its first and last POST is the documented gap of pkg/notify,
	// counted; any other repeat is a failure.
	disrupted []time.Time
	noID      int             // POSTs without the header
	reported  map[string]bool // problems already reported in a scenario
}

func startReceiver() (*receiver, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("listen for webhooks: %w", err)
	}
	rc := &receiver{url: "http://" + ln.Addr().String() + "/hook", got: map[string][]time.Time{}, reported: map[string]bool{}}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /hook", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		id := r.Header.Get(notify.HeaderID)
		rc.mu.Lock()
		if id == "" {
			rc.noID++
		} else {
			rc.got[id] = append(rc.got[id], time.Now())
		}
		rc.mu.Unlock()
		w.WriteHeader(http.StatusOK)
	})
	rc.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = rc.srv.Serve(ln) }()
	return rc, nil
}

func (rc *receiver) close() { _ = rc.srv.Close() }

// disrupt records a moment a notifier may have died mid-delivery.
func (rc *receiver) disrupt() {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rc.disrupted = append(rc.disrupted, time.Now())
}

// excused reports whether a repeat of a POST first received at first and
// last at last falls across a disruption.
func (rc *receiver) excusedLocked(times []time.Time) bool {
	first, last := times[0], times[len(times)-1]
	for _, d := range rc.disrupted {
		if !d.Before(first) && !d.After(last) {
			return true
		}
	}
	return false
}

// summary renders the receiver's counts for the report.
func (rc *receiver) summary() string {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	posts, repeats, excused := 0, 0, 0
	for _, times := range rc.got {
		posts += len(times)
		if len(times) > 1 {
			repeats += len(times) - 1
			if rc.excusedLocked(times) {
				excused += len(times) - 1
			}
		}
	}
	return fmt.Sprintf("webhooks: %d POSTs of %d notifications, %d repeats of an id already received (%d across a SIGKILLed notifier or a PostgreSQL restart, the documented gap), %d without %s",
		posts, len(rc.got), repeats, excused, rc.noID, notify.HeaderID)
}

// wantEvent is the webhook event a run that ended must have sent, "" for
// none: this restates pkg/notify's rule (a failure, a day loaded empty, a
// reload) from the run's status and trigger, as an oracle.
func wantEvent(status vocab.Status, trigger vocab.Trigger) string {
	switch {
	case status == vocab.StatusFailed:
		return notify.EventFailed
	case status == vocab.StatusLoadedEmpty:
		return notify.EventEmpty
	case status == vocab.StatusSuccessful && trigger == vocab.TriggerReload:
		return notify.EventReload
	}
	return ""
}

// outboxRun is one run as the webhook check reads it.
type outboxRun struct {
	project, runID string
	status         vocab.Status
	trigger        vocab.Trigger
	state, owner   string
	until          *time.Time
	updated        time.Time
}

// check compares what the receiver got with the runs in the store: every
// run whose terminal status needs a webhook was received exactly once
// (repeats across a disruption excepted), nothing else was received, and
// the outbox has drained. A run still due under the live claim of a
// notifier that is no longer running (SIGKILLed after claiming, before
// marking) waits for that claim's lease (5 minutes or more, pkg/notify):
// it is returned in held, not as a mismatch, unless final.
func (rc *receiver) check(ctx context.Context, e *effects, final bool) (out []mismatch, held map[string]time.Time, err error) {
	// What arrived before the runs are read: every id in it names a run
	// that had ended by then.
	rc.mu.Lock()
	got := make(map[string][]time.Time, len(rc.got))
	for id, times := range rc.got {
		got[id] = times
	}
	rc.mu.Unlock()
	rows, err := e.pool.Query(ctx, `SELECT project, run_id, status, trigger, notify_state, notify_owner, notify_until, updated_at
		FROM `+pgx.Identifier{e.schema, "runs"}.Sanitize())
	if err != nil {
		return nil, nil, fmt.Errorf("read runs for the webhook check: %w", err)
	}
	var runs []outboxRun
	for rows.Next() {
		var r outboxRun
		var status, trigger string
		if err := rows.Scan(&r.project, &r.runID, &status, &trigger, &r.state, &r.owner, &r.until, &r.updated); err != nil {
			return nil, nil, err
		}
		r.status, r.trigger = vocab.Status(status), vocab.Trigger(trigger)
		runs = append(runs, r)
	}
	if err := rows.Err(); err != nil {
		return nil, nil, fmt.Errorf("read runs for the webhook check: %w", err)
	}
	live := e.liveNotifiers()
	now := time.Now()
	held = map[string]time.Time{}
	want := map[string]bool{}
	for _, r := range runs {
		if !r.status.Terminal() {
			continue
		}
		ev := wantEvent(r.status, r.trigger)
		id := r.project + "/" + r.runID + "/" + ev
		if ev != "" {
			want[id] = true
		}
		if ev != "" && len(got[id]) > 0 {
			continue
		}
		if r.state == "sent" && ev == "" {
			continue
		}
		what := "notification never due in the outbox (notify_state " + strconv.Quote(r.state) + ")"
		switch {
		case r.state == "due" && r.until != nil && r.until.After(now) && !live[ownerPID(r.owner)]:
			if !final {
				held[id] = *r.until
				continue
			}
			what = fmt.Sprintf("still due, claimed until %s by %s, a notifier no longer running", r.until.UTC().Format(time.TimeOnly), r.owner)
		case r.state == "due":
			what = fmt.Sprintf("still due %s after the run ended", now.Sub(r.updated).Round(time.Second))
		case r.state == "sent":
			what = "marked notified but never received"
		}
		if ev == "" {
			out = append(out, mismatch{"outbox", r.runID, fmt.Sprintf("run %s (%s, trigger %s) needs no webhook but its %s", r.runID, r.status, r.trigger, what)})
			continue
		}
		out = append(out, mismatch{"webhook", r.runID, fmt.Sprintf("%s (%s, trigger %s) not received: %s", id, r.status, r.trigger, what)})
	}
	ids := make([]string, 0, len(got))
	for id := range got {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	rc.mu.Lock()
	defer rc.mu.Unlock()
	for _, id := range ids {
		times := got[id]
		switch {
		case !want[id] && !rc.reported["unwanted "+id]:
			rc.reported["unwanted "+id] = true
			e.stick(mismatch{"webhook", id, "received, but no run that ended needs this notification"})
		case len(times) > 1 && !rc.excusedLocked(times) && !rc.reported["repeat "+id]:
			rc.reported["repeat "+id] = true
			e.stick(mismatch{"webhook", id, fmt.Sprintf("received %d times, %s apart, and no notifier died nor PostgreSQL restarted in between",
				len(times), times[len(times)-1].Sub(times[0]).Round(time.Millisecond))})
		}
	}
	return out, held, nil
}

// ownerPID is the pid in a notifier's owner name ("host/pid/suffix"), 0
// when it has none.
func ownerPID(owner string) int {
	parts := strings.Split(owner, "/")
	if len(parts) < 3 {
		return 0
	}
	pid, _ := strconv.Atoi(parts[len(parts)-2])
	return pid
}

// awaitHeldWebhooks waits, after the last scenario, for the webhooks a
// SIGKILLed notifier's claim was holding (their leases run out minutes
// later); what is still missing then is a final result of its own.
func (s *suite) awaitHeldWebhooks(ctx context.Context) {
	until := s.rec.effects.heldUntil()
	if until.IsZero() {
		return
	}
	name := "webhooks held by a SIGKILLed notifier's claim"
	logf("%s: waiting until %s for them", name, until.Format(time.TimeOnly))
	s.rec.effects.begin()
	s.rec.effects.mu.Lock()
	s.rec.effects.final = true
	s.rec.effects.mu.Unlock()
	start := time.Now()
	problems, _, err := s.rec.waitReconciled(ctx, time.Until(until)+30*time.Second)
	if err != nil {
		problems = append(problems, mismatch{"-", "-", err.Error()})
	}
	s.results = append(s.results, result{scenario: name, faults: []string{"-"}, took: time.Since(start), problems: problems})
}
