// Package notify tells a project's webhook (Slack-compatible: a JSON body
// with "text" and "blocks") about the days that need a person: a day that
// failed, a day loaded with no data, and a reload.
//
// The loader calls OnDayDone after every finished run; it never blocks:
// the run is queued (bounded) and sent by Run's workers, with retries and
// exponential backoff, bounded in attempts. Each event is sent once: a
// dedupe key (run id + event) in Redis is taken before the first attempt,
// so a redelivered END or a second loader replica sends nothing more.
// What cannot be queued is logged and counted, never waited for.
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
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/sluicehq/sluice/pkg/config"
	"github.com/sluicehq/sluice/pkg/state"
	"github.com/sluicehq/sluice/pkg/store"
	"github.com/sluicehq/sluice/schemas"
)

// Events a webhook hears about.
const (
	EventFailed = "failed" // the run failed; the day keeps what it had
	EventEmpty  = "empty"  // the day was loaded and has no rows
	EventReload = "reload" // the day was reloaded because its data changed
)

// Config tunes delivery. Zero values take the defaults.
type Config struct {
	QueueSize   int           // finished runs waiting to be looked at; default 256
	Workers     int           // concurrent deliveries; default 2
	MaxAttempts int           // per event; default 5
	Backoff     time.Duration // wait before the second attempt, doubling after; default 1s
	MaxBackoff  time.Duration // default 30s
	Timeout     time.Duration // per HTTP attempt; default 10s
	DedupeTTL   time.Duration // how long a sent event is remembered; default 7 days
}

func (c *Config) defaults() {
	if c.QueueSize <= 0 {
		c.QueueSize = 256
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
	if c.DedupeTTL <= 0 {
		c.DedupeTTL = 7 * 24 * time.Hour
	}
}

// Deps are the notifier's collaborators.
type Deps struct {
	Settings *config.File // projects[].webhook_url
	Store    store.Store  // the finished run's and day's details
	State    *state.State // dedupe keys
	Client   *http.Client // default: http.Client with no timeout of its own (Config.Timeout applies)
	Logger   *slog.Logger
	Registry prometheus.Registerer
	// After waits between attempts; time.After when nil (tests pass an
	// immediate one).
	After func(time.Duration) <-chan time.Time
}

// Notifier delivers webhook notifications.
type Notifier struct {
	cfg      Config
	deps     Deps
	webhooks map[string]string // project → URL; URLs are secrets, never logged
	queue    chan finished

	sent, failed, dropped *prometheus.CounterVec
}

type finished struct {
	end     store.RunEnd
	outcome store.Outcome
}

// New builds a Notifier; it sends nothing until Run.
func New(cfg Config, deps Deps) (*Notifier, error) {
	cfg.defaults()
	if deps.Settings == nil || deps.Store == nil || deps.State == nil {
		return nil, errors.New("notify: settings, store and state are required")
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
	n := &Notifier{cfg: cfg, deps: deps, webhooks: Webhooks(deps.Settings), queue: make(chan finished, cfg.QueueSize),
		sent:    prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sluice_notify_sent_total", Help: "Webhook notifications delivered, by event."}, []string{"event"}),
		failed:  prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sluice_notify_failed_total", Help: "Webhook notifications given up on after their attempts, by event."}, []string{"event"}),
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sluice_notify_dropped_total", Help: "Finished runs not looked at because the notification queue was full."}, []string{"project"}),
	}
	if deps.Registry != nil {
		for _, c := range []prometheus.Collector{n.sent, n.failed, n.dropped} {
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

// OnDayDone is the loader's hook. It returns at once: a run that may need
// a notification is queued, and one that cannot be queued is dropped,
// logged and counted.
func (n *Notifier) OnDayDone(_ context.Context, end store.RunEnd, outcome store.Outcome) {
	if _, ok := n.webhooks[end.Project]; !ok {
		return
	}
	switch outcome {
	case store.Swapped, store.Incomplete, store.TooManyRejected:
	default:
		return // a redelivery or a stale run: nothing new happened to the day
	}
	select {
	case n.queue <- finished{end, outcome}:
	default:
		n.dropped.WithLabelValues(end.Project).Inc()
		n.deps.Logger.Warn("notification queue full; run not notified", "run_id", end.RunID, "project", end.Project,
			"ingestion", end.Ingestion, "day", end.Date)
	}
}

// Run delivers queued notifications until ctx is cancelled.
func (n *Notifier) Run(ctx context.Context) error {
	g, ctx := errgroup.WithContext(ctx)
	for range n.cfg.Workers {
		g.Go(func() error {
			for {
				select {
				case <-ctx.Done():
					return nil
				case f := <-n.queue:
					n.handle(ctx, f)
				}
			}
		})
	}
	return g.Wait()
}

// Message is one notification, before it is rendered for the webhook.
type Message struct {
	Event     string
	Project   string
	Ingestion string
	Date      string
	RunID     string
	Trigger   string
	Rows      int64  // rows loaded
	Extracted int64  // rows the query returned
	Category  string // failed: the error category
	Detail    string // failed: the error; reload: why
}

// classify decides which event, if any, a finished run is.
func (n *Notifier) classify(ctx context.Context, f finished) (Message, bool, error) {
	e := f.end
	m := Message{Project: e.Project, Ingestion: e.Ingestion, Date: e.Date, RunID: e.RunID, Trigger: e.Trigger, Extracted: e.Rows}
	run, err := n.deps.Store.Run(ctx, e.Project, e.RunID)
	if err != nil && !errors.Is(err, store.ErrNotFound) {
		return m, false, fmt.Errorf("read run %s: %w", e.RunID, err)
	}
	if f.outcome != store.Swapped {
		m.Event, m.Category, m.Detail = EventFailed, run.ErrorCategory, run.ErrorMessage
		if m.Category == "" && f.outcome == store.TooManyRejected {
			m.Category = "TOO_MANY_REJECTED"
		}
		return m, true, nil
	}
	days, err := n.deps.Store.Days(ctx, store.DayFilter{Project: e.Project, Ingestion: e.Ingestion, From: e.Date, To: e.Date})
	if err != nil {
		return m, false, fmt.Errorf("read day %s of %s: %w", e.Date, e.Ingestion, err)
	}
	if len(days) == 1 {
		m.Rows, m.Extracted = days[0].RowsLoaded, days[0].Extracted
		if days[0].Status == store.StatusLoadedEmpty {
			m.Event = EventEmpty
			return m, true, nil
		}
	}
	if e.Trigger == schemas.TriggerReload {
		m.Event, m.Detail = EventReload, run.Message
		return m, true, nil
	}
	return m, false, nil
}

func (n *Notifier) handle(ctx context.Context, f finished) {
	log := n.deps.Logger.With("run_id", f.end.RunID, "project", f.end.Project, "ingestion", f.end.Ingestion, "day", f.end.Date)
	m, ok, err := n.classify(ctx, f)
	if err != nil {
		log.Warn("notification not sent: run details unreadable", "err", err)
		return
	}
	if !ok {
		return
	}
	first, err := n.deps.State.Once(ctx, "notify:"+m.RunID+":"+m.Event, n.cfg.DedupeTTL)
	if err != nil {
		log.Warn("notification not sent: dedupe key unavailable", "event", m.Event, "err", err)
		return
	}
	if !first {
		return // sent before (a redelivery, or another loader)
	}
	if err := n.Send(ctx, n.webhooks[m.Project], m); err != nil {
		n.failed.WithLabelValues(m.Event).Inc()
		log.Error("webhook notification given up", "event", m.Event, "err", err)
		return
	}
	n.sent.WithLabelValues(m.Event).Inc()
	log.Info("webhook notified", "event", m.Event)
}

// errPermanent marks an answer that retrying will not change.
var errPermanent = errors.New("permanent")

// Send posts m to url, retrying transient failures (network errors, 429,
// 5xx) with backoff up to MaxAttempts.
func (n *Notifier) Send(ctx context.Context, url string, m Message) error {
	body, err := json.Marshal(Payload(m))
	if err != nil {
		return fmt.Errorf("encode notification: %w", err)
	}
	wait := n.cfg.Backoff
	for attempt := 1; ; attempt++ {
		err = n.post(ctx, url, body)
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

func (n *Notifier) post(ctx context.Context, url string, body []byte) error {
	ctx, cancel := context.WithTimeout(ctx, n.cfg.Timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("%w: build request: %v", errPermanent, redact(err, url))
	}
	req.Header.Set("Content-Type", "application/json")
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
			text += " (" + m.Category + ")"
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
