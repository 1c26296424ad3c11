// Package notify tells a project's webhook (Slack-compatible: a JSON body
// with "text" and "blocks") about the days that need a person: a day that
// failed, a day loaded with no data, and a reload.
//
// Notifications come from the store's outbox: the transaction that gives a
// run its terminal status also makes the run's notification due (see
// store.Store), so neither a crash nor a shutdown after the loader
// committed loses one. The Notifier polls the outbox per project, claims
// due runs (a lease, so the notifiers beside several loader replicas
// never deliver one run at once), classifies each, POSTs the ones that
// need a person with retries and exponential backoff, and marks every
// claimed run notified, also those that need nothing.
//
// Delivery is at least once, with an id to deduplicate by. Every POST
// carries the header
//
//	Sluice-Notification-Id: <project>/<run_id>/<event>
//
// A run has one terminal status and so at most one event: the id names
// it. The same id is POSTed again only when a notifier stopped between
// the POST and MarkNotified (a crash, or a POST whose answer never came);
// a receiver that remembers the ids it has seen gets each event once.
package notify

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/sluicehq/sluice/pkg/config"
	"github.com/sluicehq/sluice/pkg/runid"
	"github.com/sluicehq/sluice/pkg/store"
	"github.com/sluicehq/sluice/pkg/vocab"
)

// Events a webhook hears about.
const (
	EventFailed = "failed" // the run failed; the day keeps what it had
	EventEmpty  = "empty"  // the day was loaded and has no rows
	EventReload = "reload" // the day was reloaded because its data changed
)

// HeaderID is the header that carries a notification's id,
// "<project>/<run_id>/<event>": a receiver deduplicates by it.
const HeaderID = "Sluice-Notification-Id"

// Config tunes delivery. Zero values take the defaults.
type Config struct {
	Interval    time.Duration // between polls of the outbox; default 2s
	Batch       int           // runs claimed per project and claim; default 50
	Workers     int           // projects delivered concurrently; default 2
	MaxAttempts int           // POSTs of one notification per poll; default 5
	Backoff     time.Duration // wait before the second attempt, doubling after; default 1s
	MaxBackoff  time.Duration // default 30s
	Timeout     time.Duration // per HTTP attempt; default 10s
	// Lease is how long a claim keeps other notifiers off the claimed
	// runs, and how long a project whose webhook is down waits before its
	// runs are tried again. Default, and minimum, 5 min or three times the
	// longest delivery (MaxAttempts attempts and their backoffs),
	// whichever is more.
	Lease time.Duration
	// MaxAge drops (marks without sending, counted) a notification due
	// longer than this: after a long outage, or for a project that has
	// just been given a webhook. Default 24h.
	MaxAge time.Duration
	// DrainTimeout bounds the delivery of what is due once Run's ctx is
	// cancelled; what is left stays due for the next start. Default 10s.
	DrainTimeout time.Duration
	// Owner names this notifier's claims; unique among running notifiers.
	// Default: host, pid and a random suffix.
	Owner string
}

// longest is the most one notification's delivery can take.
func (c *Config) longest() time.Duration {
	d := time.Duration(c.MaxAttempts) * c.Timeout
	wait := c.Backoff
	for range c.MaxAttempts - 1 {
		d += wait
		wait = min(wait*2, c.MaxBackoff)
	}
	return d
}

func (c *Config) defaults() {
	if c.Interval <= 0 {
		c.Interval = 2 * time.Second
	}
	if c.Batch <= 0 {
		c.Batch = 50
	}
	if c.Workers <= 0 {
		c.Workers = 2
	}
	if c.MaxAttempts <= 0 {
		c.MaxAttempts = 5
	}
	if c.Backoff <= 0 {
		c.Backoff = time.Second
	}
	if c.MaxBackoff < c.Backoff {
		c.MaxBackoff = max(30*time.Second, c.Backoff)
	}
	if c.Timeout <= 0 {
		c.Timeout = 10 * time.Second
	}
	c.Lease = max(c.Lease, 5*time.Minute, 3*c.longest())
	if c.MaxAge <= 0 {
		c.MaxAge = 24 * time.Hour
	}
	if c.DrainTimeout <= 0 {
		c.DrainTimeout = 10 * time.Second
	}
	if c.Owner == "" {
		host, _ := os.Hostname()
		c.Owner = fmt.Sprintf("%s/%d/%s", host, os.Getpid(), runid.New()[:8])
	}
}

// Deps are the notifier's collaborators.
type Deps struct {
	Settings *config.File // projects[].webhook_url
	Store    store.Store  // the outbox
	Client   *http.Client // default: http.Client with no timeout of its own (Config.Timeout applies)
	Logger   *slog.Logger
	Registry prometheus.Registerer
	// After waits between polls and attempts; time.After when nil.
	After func(time.Duration) <-chan time.Time
	// Now is the clock for claims and MaxAge; time.Now when nil.
	Now func() time.Time
}

// Notifier delivers webhook notifications from the store's outbox.
type Notifier struct {
	cfg      Config
	deps     Deps
	webhooks map[string]string // project → URL; URLs are secrets, never logged
	projects []string          // every configured project: those without a webhook are marked too

	sent, failed, expired *prometheus.CounterVec
}

// New builds a Notifier; it sends nothing until Run.
func New(cfg Config, deps Deps) (*Notifier, error) {
	cfg.defaults()
	if deps.Settings == nil || deps.Store == nil {
		return nil, errors.New("notify: settings and store are required")
	}
	if deps.Client == nil {
		deps.Client = &http.Client{}
	}
	if deps.Logger == nil {
		deps.Logger = slog.Default()
	}
	if deps.After == nil {
		deps.After = time.After
	}
	if deps.Now == nil {
		deps.Now = time.Now
	}
	n := &Notifier{cfg: cfg, deps: deps, webhooks: Webhooks(deps.Settings),
		sent:    prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sluice_notify_sent_total", Help: "Webhook notifications delivered, by event."}, []string{"event"}),
		failed:  prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sluice_notify_failed_total", Help: "Webhook notifications the webhook refused (4xx), by event."}, []string{"event"}),
		expired: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sluice_notify_expired_total", Help: "Webhook notifications dropped unsent because they were due longer than the maximum age, by event."}, []string{"event"}),
	}
	for _, p := range deps.Settings.Projects {
		n.projects = append(n.projects, p.Name)
	}
	sort.Strings(n.projects)
	if deps.Registry != nil {
		for _, c := range []prometheus.Collector{n.sent, n.failed, n.expired} {
			if err := deps.Registry.Register(c); err != nil {
				return nil, fmt.Errorf("register notify metrics: %w", err)
			}
		}
	}
	return n, nil
}

// Webhooks returns the projects that have a webhook, with its URL.
func Webhooks(f *config.File) map[string]string {
	out := map[string]string{}
	for _, p := range f.Projects {
		if p.WebhookURL != "" {
			out[p.Name] = p.WebhookURL
		}
	}
	return out
}

// Run delivers due notifications, polling every Interval, until ctx is
// cancelled; then it drains: it delivers what is due for up to
// DrainTimeout, gives back its claims and returns nil.
func (n *Notifier) Run(ctx context.Context) error {
	for {
		n.poll(ctx)
		select {
		case <-ctx.Done():
			n.drain(ctx)
			return nil
		case <-n.deps.After(n.cfg.Interval):
		}
	}
}

func (n *Notifier) drain(ctx context.Context) {
	dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), n.cfg.DrainTimeout)
	defer cancel()
	// The cancelled poll may have left claims of ours: take them back.
	n.release(dctx)
	n.poll(dctx)
	// What the drain did not reach stays due; without our claims the next
	// start (or another notifier) takes it at once.
	rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer rcancel()
	n.release(rctx)
}

func (n *Notifier) release(ctx context.Context) {
	if err := n.deps.Store.ReleaseNotifications(ctx, n.cfg.Owner); err != nil {
		n.deps.Logger.Warn("notification claims not released; they end with their lease", "owner", n.cfg.Owner, "err", err)
	}
}

// poll goes once through every project's due notifications.
func (n *Notifier) poll(ctx context.Context) {
	var g errgroup.Group
	g.SetLimit(n.cfg.Workers)
	for _, p := range n.projects {
		g.Go(func() error {
			n.project(ctx, p)
			return nil
		})
	}
	_ = g.Wait()
}

// project delivers the due notifications of one project, claim by claim.
// It stops at the first one the webhook could not take (it is down: the
// claimed runs wait for the lease to end) and before a claim could end
// mid-delivery.
func (n *Notifier) project(ctx context.Context, project string) {
	for ctx.Err() == nil {
		at := n.deps.Now()
		runs, err := n.deps.Store.ClaimNotifications(ctx, store.NotificationClaim{
			Projects: []string{project}, Owner: n.cfg.Owner, At: at, Lease: n.cfg.Lease, Limit: n.cfg.Batch})
		if err != nil {
			if ctx.Err() == nil {
				n.deps.Logger.Warn("notifications not claimed", "project", project, "err", err)
			}
			return
		}
		deadline := at.Add(n.cfg.Lease - n.cfg.longest())
		for _, r := range runs {
			if n.deps.Now().After(deadline) || !n.deliver(ctx, r) {
				return
			}
		}
		if len(runs) < n.cfg.Batch {
			return
		}
	}
}

// Message is one notification, before it is rendered for the webhook.
type Message struct {
	Event     string
	Project   string
	Ingestion string
	Date      string
	RunID     string
	Trigger   vocab.Trigger
	Rows      int64          // rows loaded
	Extracted int64          // rows the query returned
	Category  vocab.Category // failed: the error category
	Detail    string         // failed: the error; reload: why
}

// ID is the notification's id, sent in HeaderID.
func (m Message) ID() string { return m.Project + "/" + m.RunID + "/" + m.Event }

// Classify decides which event, if any, a run that ended is: a failure, a
// day loaded with no data, or a reload; nothing for an ordinary load, a
// superseded run or a day with no data yet.
func Classify(r store.Run) (Message, bool) {
	m := Message{Project: r.Project, Ingestion: r.Ingestion, Date: r.Date, RunID: r.RunID, Trigger: r.Trigger,
		Rows: r.Mapped, Extracted: r.Extracted}
	switch {
	case r.Status == vocab.StatusFailed:
		m.Event, m.Category, m.Detail = EventFailed, r.ErrorCategory, r.ErrorMessage
	case r.Status == vocab.StatusLoadedEmpty:
		m.Event = EventEmpty
	case r.Status == vocab.StatusSuccessful && r.Trigger == vocab.TriggerReload:
		m.Event, m.Detail = EventReload, r.Message
	default:
		return m, false
	}
	return m, true
}

// deliver notifies one claimed run and marks it notified. It reports
// false when the run stays due: the webhook did not take it (down, or ctx
// ended), or the mark failed.
func (n *Notifier) deliver(ctx context.Context, r store.Run) bool {
	log := n.deps.Logger.With("run_id", r.RunID, "project", r.Project, "ingestion", r.Ingestion, "day", r.Date)
	m, ok := Classify(r)
	url, hooked := n.webhooks[r.Project]
	switch {
	case !ok || !hooked:
		// Nothing to tell, or nobody to tell it to.
	case n.deps.Now().Sub(r.UpdatedAt) > n.cfg.MaxAge:
		n.expired.WithLabelValues(m.Event).Inc()
		log.Warn("webhook notification too old; dropped", "event", m.Event, "ended_at", r.UpdatedAt)
	default:
		err := n.Send(ctx, url, m)
		switch {
		case err == nil:
			n.sent.WithLabelValues(m.Event).Inc()
			log.Info("webhook notified", "event", m.Event)
		case errors.Is(err, errPermanent):
			n.failed.WithLabelValues(m.Event).Inc()
			log.Error("webhook refused the notification; given up", "event", m.Event, "err", err)
		default:
			if ctx.Err() == nil {
				log.Warn("webhook unreachable; notification stays due", "event", m.Event, "err", err)
			}
			return false
		}
	}
	if err := n.deps.Store.MarkNotified(ctx, r.Project, r.RunID, n.deps.Now()); err != nil {
		log.Warn("notification not marked; it stays due", "err", err)
		return false
	}
	return true
}

// errPermanent marks an answer that retrying will not change.
var errPermanent = errors.New("permanent")

// Send posts m to url with its id in HeaderID, retrying transient
// failures (network errors, 429, 5xx) with backoff up to MaxAttempts. An
// error wrapping errPermanent (a 4xx answer) will not heal by retrying.
func (n *Notifier) Send(ctx context.Context, url string, m Message) error {
	id := m.ID()
	body, err := json.Marshal(Payload(m))
	if err != nil {
		return fmt.Errorf("encode notification: %w", err)
	}
	wait := n.cfg.Backoff
	for attempt := 1; ; attempt++ {
		err = n.post(ctx, url, id, body)
		if err == nil || errors.Is(err, errPermanent) || attempt >= n.cfg.MaxAttempts {
			if err != nil {
				return fmt.Errorf("post %s notification (attempt %d): %w", m.Event, attempt, err)
			}
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("post %s notification: %w", m.Event, ctx.Err())
		case <-n.deps.After(wait):
		}
		wait = min(wait*2, n.cfg.MaxBackoff)
	}
}

func (n *Notifier) post(ctx context.Context, url, id string, body []byte) error {
	ctx, cancel := context.WithTimeout(ctx, n.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("%w: build request: %v", errPermanent, redact(err, url))
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set(HeaderID, id)
	resp, err := n.deps.Client.Do(req)
	if err != nil {
		return redact(err, url)
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		return nil
	case resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500:
		return fmt.Errorf("webhook answered %s", resp.Status)
	default:
		return fmt.Errorf("%w: webhook answered %s", errPermanent, resp.Status)
	}
}

// redact keeps the webhook URL (a secret: it is the credential) out of
// errors that get logged.
func redact(err error, url string) error {
	return errors.New(strings.ReplaceAll(err.Error(), url, "<webhook>"))
}

// SlackPayload is what a webhook receives: Slack's incoming-webhook shape.
type SlackPayload struct {
	Text   string       `json:"text"`
	Blocks []SlackBlock `json:"blocks"`
}

// SlackBlock is a section or context block.
type SlackBlock struct {
	Type     string      `json:"type"`
	Text     *SlackText  `json:"text,omitempty"`
	Elements []SlackText `json:"elements,omitempty"`
}

// SlackText is mrkdwn text.
type SlackText struct {
	Type string `json:"type"`
	Text string `json:"text"`
}

// Payload renders m for a Slack-compatible webhook.
func Payload(m Message) SlackPayload {
	where := fmt.Sprintf("%s/%s %s", m.Project, m.Ingestion, m.Date)
	var text string
	switch m.Event {
	case EventFailed:
		text = fmt.Sprintf(":x: Sluice: %s failed", where)
		if m.Category != "" {
			text += " (" + string(m.Category) + ")"
		}
		if m.Detail != "" {
			text += ": " + clip(m.Detail, 500)
		}
	case EventEmpty:
		text = fmt.Sprintf(":warning: Sluice: %s loaded with no data (%d rows from the warehouse, none loaded)", where, m.Extracted)
	case EventReload:
		text = fmt.Sprintf(":arrows_counterclockwise: Sluice: %s reloaded: %d rows loaded", where, m.Rows)
		if m.Detail != "" {
			text += " (" + clip(m.Detail, 300) + ")"
		}
	default:
		text = fmt.Sprintf("Sluice: %s: %s", where, m.Event)
	}
	return SlackPayload{Text: text, Blocks: []SlackBlock{
		{Type: "section", Text: &SlackText{Type: "mrkdwn", Text: text}},
		{Type: "context", Elements: []SlackText{{Type: "mrkdwn", Text: fmt.Sprintf("event `%s` · run `%s` · trigger `%s`", m.Event, m.RunID, m.Trigger)}}},
	}}
}

func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return strings.ToValidUTF8(s[:n], "") + "…"
}
