// Package state is Sluice's coordination state in Redis: trigger rate limits,
// the lease that keeps one run per day in flight (with a fencing token),
// the one queued request per busy day, and dedupe keys.
//
// Nothing here must survive a flush except the fence's monotonicity, which
// is anchored on the clock: a fence is never below the current time in
// microseconds, so fences issued after a flush still beat those issued
// before it. Everything else is safe to lose: days, counts and run history
// live in the event store.
//
// Only commands and Lua that miniredis also speaks are used, so the same
// code runs against a real Redis and against the embedded one.
//
// The day lease and the pending request are coordination that only
// pkg/dispatch drives (AcquireDay, LeaseOrQueue, PromotePending,
// RestorePending, RenewDay, ReleaseDay, DayHolder, PendingRun,
// PendingDays): every other package asks pkg/dispatch, so a day's run
// starts through one door.
//
// Every script touches only the keys of one day (lease, fence and pending
// share the day's hash tag), so it runs on Redis Cluster without a hash tag
// in the prefix. The index of days with a pending request is one key
// beside them, kept outside the scripts: a member is added before and
// after a request is queued and dropped only after the day is seen without
// one, so a member may linger (harmless) but is not lost while its request
// waits.
package state

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// DefaultPrefix is used when Options.Prefix is empty.
const DefaultPrefix = "sluice:"

// fenceMemory is how long the last issued fence of a day is remembered.
// Past it, the clock alone keeps fences increasing, so it only has to be
// far longer than any clock skew between planners.
const fenceMemory = 7 * 24 * time.Hour

// Options configure a State.
type Options struct {
	// Prefix starts every key; tests use a unique one each. A "{" in it
	// must be closed by a "}" in it too, or the day's hash tag breaks.
	Prefix string
	// Clock is the time fences are anchored on; time.Now when nil.
	Clock func() time.Time
}

// State is the coordination state. It is safe for concurrent use.
type State struct {
	rdb    redis.UniversalClient
	prefix string
	clock  func() time.Time
}

// DayKey names one day of one ingestion.
type DayKey struct {
	Project   string
	Ingestion string
	Date      string // YYYY-MM-DD
}

func (d DayKey) String() string { return d.Project + "/" + d.Ingestion + "/" + d.Date }

// member encodes the day reversibly, whatever its parts contain.
func (d DayKey) member() string {
	return url.PathEscape(d.Project) + "/" + url.PathEscape(d.Ingestion) + "/" + url.PathEscape(d.Date)
}

func parseMember(m string) (DayKey, error) {
	parts := strings.Split(m, "/")
	if len(parts) != 3 {
		return DayKey{}, fmt.Errorf("pending member %q: want project/ingestion/date", m)
	}
	var out [3]string
	for i, p := range parts {
		v, err := url.PathUnescape(p)
		if err != nil {
			return DayKey{}, fmt.Errorf("pending member %q: %w", m, err)
		}
		out[i] = v
	}
	return DayKey{Project: out[0], Ingestion: out[1], Date: out[2]}, nil
}

// New returns the state kept in rdb under opts.Prefix.
func New(rdb redis.UniversalClient, opts Options) *State {
	s := &State{rdb: rdb, prefix: opts.Prefix, clock: opts.Clock}
	if s.prefix == "" {
		s.prefix = DefaultPrefix
	}
	if s.clock == nil {
		s.clock = time.Now
	}
	return s
}

func (s *State) key(parts ...string) string {
	var b strings.Builder
	b.WriteString(s.prefix)
	for i, p := range parts {
		if i > 0 {
			b.WriteByte(':')
		}
		b.WriteString(p)
	}
	return b.String()
}

// The day's keys share a hash tag so one script may touch all three.
func (s *State) leaseKey(d DayKey) string   { return s.key("lease", "{"+d.member()+"}") }
func (s *State) fenceKey(d DayKey) string   { return s.key("fence", "{"+d.member()+"}") }
func (s *State) pendingKey(d DayKey) string { return s.key("pending", "{"+d.member()+"}") }
func (s *State) dayKeys(d DayKey) []string {
	return []string{s.leaseKey(d), s.fenceKey(d), s.pendingKey(d)}
}
func (s *State) triggerKey(project, typ string) string {
	return s.key("ratelimit", url.PathEscape(project), url.PathEscape(typ))
}
func (s *State) pendingSetKey() string { return s.key("pending-days") }

// allowScript sets the window key if absent; otherwise it answers the
// window's remaining milliseconds.
var allowScript = redis.NewScript(`
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return -1
end
return redis.call('PTTL', KEYS[1])
`)

// AllowTrigger lets one call per project and type through every window.
// Of any number of concurrent calls exactly one gets ok; the others get the
// time left until the window closes.
func (s *State) AllowTrigger(ctx context.Context, project, typ string, window time.Duration) (bool, time.Duration, error) {
	if window <= 0 {
		return false, 0, fmt.Errorf("allow trigger %s/%s: window must be positive, got %s", project, typ, window)
	}
	k := s.triggerKey(project, typ)
	left, err := allowScript.Run(ctx, s.rdb, []string{k},
		s.clock().UTC().Format(time.RFC3339Nano), window.Milliseconds()).Int64()
	if err != nil {
		return false, 0, fmt.Errorf("allow trigger %s/%s: %w", project, typ, err)
	}
	if left == -1 {
		return true, 0, nil
	}
	if left < 0 {
		// The key vanished or has no expiry (someone edited it): the
		// caller may retry at once rather than being told a made-up wait.
		left = 0
	}
	return false, time.Duration(left) * time.Millisecond, nil
}

// issueLua is the one place a lease is handed out: it gives the free lease
// KEYS[1] to run with a new fence from KEYS[2] and returns the fence.
// ARGV[2] is the ttl in ms, ARGV[3] now in µs, ARGV[4] the fence memory in
// ms. The fence is max(last issued + 1, now µs). The arithmetic stays in
// Redis integers (INCR) or in the caller's string, never a Lua number
// printed back, so no precision is lost on 16-digit values.
const issueLua = `
local function issue(run)
  local last = redis.call('GET', KEYS[2])
  if last and tonumber(last) >= tonumber(ARGV[3]) then
    redis.call('INCR', KEYS[2])
  else
    redis.call('SET', KEYS[2], ARGV[3])
  end
  redis.call('PEXPIRE', KEYS[2], ARGV[4])
  local fence = redis.call('GET', KEYS[2])
  redis.call('HSET', KEYS[1], 'run', run, 'fence', fence)
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return fence
end
`

// acquireScript takes or renews the day's lease.
// KEYS: lease, fence. ARGV: run id, ttl ms, now µs, fence memory ms.
// Returns {1, fence} when held by the run afterwards, {0, ""} otherwise.
var acquireScript = redis.NewScript(issueLua + `
local holder = redis.call('HGET', KEYS[1], 'run')
if holder then
  if holder == ARGV[1] then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return {1, redis.call('HGET', KEYS[1], 'fence')}
  end
  return {0, ''}
end
return {1, issue(ARGV[1])}
`)

// leaseArgs are the arguments every lease-issuing script takes after the
// run id (see issueLua).
func (s *State) leaseArgs(runID string, ttl time.Duration, more ...any) []any {
	args := []any{runID, ttl.Milliseconds(), strconv.FormatInt(s.clock().UnixMicro(), 10), fenceMemory.Milliseconds()}
	return append(args, more...)
}

func checkTTL(ttl time.Duration) error {
	if ttl < time.Millisecond {
		return fmt.Errorf("ttl must be at least 1ms, got %s", ttl)
	}
	return nil
}

func parseFence(v any) (int64, error) {
	fs, _ := v.(string)
	fence, err := strconv.ParseInt(fs, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("fence %q: %w", fs, err)
	}
	return fence, nil
}

// AcquireDay takes the day's lease for runID if it is free, or renews it
// (same fence, ttl restarted) if runID already holds it. The fence of a new
// lease is strictly greater than any fence issued before for that day, also
// after Redis lost its data. A lease not renewed expires after ttl, so a
// dead holder does not block the day; its fence then loses to the next one.
func (s *State) AcquireDay(ctx context.Context, day DayKey, runID string, ttl time.Duration) (int64, bool, error) {
	if runID == "" {
		return 0, false, fmt.Errorf("acquire day %s: empty run id", day)
	}
	if err := checkTTL(ttl); err != nil {
		return 0, false, fmt.Errorf("acquire day %s: %w", day, err)
	}
	res, err := acquireScript.Run(ctx, s.rdb, []string{s.leaseKey(day), s.fenceKey(day)}, s.leaseArgs(runID, ttl)...).Slice()
	if err != nil {
		return 0, false, fmt.Errorf("acquire day %s: %w", day, err)
	}
	if len(res) != 2 {
		return 0, false, fmt.Errorf("acquire day %s: unexpected reply %v", day, res)
	}
	if ok, _ := res[0].(int64); ok != 1 {
		return 0, false, nil
	}
	fence, err := parseFence(res[1])
	if err != nil {
		return 0, false, fmt.Errorf("acquire day %s: %w", day, err)
	}
	return fence, true, nil
}

// DayClaim is what LeaseOrQueue did.
type DayClaim struct {
	// Leased: the run holds the day now, under Fence. Otherwise the run is
	// the day's pending request, queued behind Holder.
	Leased bool
	Fence  int64
	Holder string
	// ReplacedRun and Replaced are the pending request the run replaced
	// ("" and nil when there was none): a newer request, leased or queued,
	// wins over an older one still waiting, which will never start.
	ReplacedRun string
	Replaced    []byte
}

// leaseOrQueueScript leases a free day or queues the run as its one
// pending request. KEYS: lease, fence, pending. ARGV: run id, ttl ms,
// now µs, fence memory ms, payload.
// Returns {1, fence, replaced run, replaced payload} or
// {0, holder, replaced run, replaced payload}.
var leaseOrQueueScript = redis.NewScript(issueLua + `
local old = redis.call('HMGET', KEYS[3], 'run', 'payload')
local holder = redis.call('HGET', KEYS[1], 'run')
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return {1, redis.call('HGET', KEYS[1], 'fence'), '', ''}
end
if not holder then
  redis.call('DEL', KEYS[3])
  return {1, issue(ARGV[1]), old[1] or '', old[2] or ''}
end
redis.call('HSET', KEYS[3], 'run', ARGV[1], 'payload', ARGV[5])
return {0, holder, old[1] or '', old[2] or ''}
`)

// LeaseOrQueue takes the day's lease for runID when it is free (as
// AcquireDay does; a pending request still waiting for the freed day is
// replaced by it), and otherwise makes payload the day's one pending
// request, replacing an older one in the same step. So of any number of
// concurrent callers on a busy day exactly one stays pending and every
// other learns it was replaced.
func (s *State) LeaseOrQueue(ctx context.Context, day DayKey, runID string, payload []byte, ttl time.Duration) (DayClaim, error) {
	if runID == "" {
		return DayClaim{}, fmt.Errorf("lease or queue day %s: empty run id", day)
	}
	if err := checkTTL(ttl); err != nil {
		return DayClaim{}, fmt.Errorf("lease or queue day %s: %w", day, err)
	}
	// Indexed before the request can be pending, and again after: see the
	// package doc.
	if err := s.indexPending(ctx, day); err != nil {
		return DayClaim{}, err
	}
	res, err := leaseOrQueueScript.Run(ctx, s.rdb, s.dayKeys(day), s.leaseArgs(runID, ttl, payload)...).Slice()
	if err != nil {
		return DayClaim{}, fmt.Errorf("lease or queue day %s: %w", day, err)
	}
	if len(res) != 4 {
		return DayClaim{}, fmt.Errorf("lease or queue day %s: unexpected reply %v", day, res)
	}
	var c DayClaim
	c.ReplacedRun, _ = res[2].(string)
	if old, _ := res[3].(string); c.ReplacedRun != "" && c.ReplacedRun != runID {
		c.Replaced = []byte(old)
	} else {
		c.ReplacedRun = "" // the same request again (a redelivery) replaced nothing
	}
	if ok, _ := res[0].(int64); ok == 1 {
		c.Leased = true
		if c.Fence, err = parseFence(res[1]); err != nil {
			return DayClaim{}, fmt.Errorf("lease or queue day %s: %w", day, err)
		}
		return c, s.forgetPending(ctx, day)
	}
	c.Holder, _ = res[1].(string)
	return c, s.indexPending(ctx, day)
}

// Promotion is what PromotePending did.
type Promotion struct {
	// Started: the day was free and its pending request RunID now holds
	// the lease under Fence; Payload is the request as queued.
	Started bool
	RunID   string
	Payload []byte
	Fence   int64
	// Busy: the day's lease is held, the pending request (if any) stays.
	Busy bool
}

// promoteScript starts the pending request of a free day. KEYS: lease,
// fence, pending. ARGV: "", ttl ms, now µs, fence memory ms.
// Returns {1, run, payload, fence}, {0} when the day is held, {-1} when
// nothing is pending.
var promoteScript = redis.NewScript(issueLua + `
if redis.call('EXISTS', KEYS[1]) == 1 then
  return {0}
end
local p = redis.call('HMGET', KEYS[3], 'run', 'payload')
if not p[1] then
  return {-1}
end
redis.call('DEL', KEYS[3])
return {1, p[1], p[2] or '', issue(p[1])}
`)

// PromotePending starts the day's pending request if the day is free: in
// one step it checks the lease, takes the request and leases the day to
// its run with a new fence, so no other run can slip in between and two
// promoters never both start it.
func (s *State) PromotePending(ctx context.Context, day DayKey, ttl time.Duration) (Promotion, error) {
	if err := checkTTL(ttl); err != nil {
		return Promotion{}, fmt.Errorf("promote pending request of day %s: %w", day, err)
	}
	res, err := promoteScript.Run(ctx, s.rdb, s.dayKeys(day), s.leaseArgs("", ttl)...).Slice()
	if err != nil {
		return Promotion{}, fmt.Errorf("promote pending request of day %s: %w", day, err)
	}
	if len(res) == 0 {
		return Promotion{}, fmt.Errorf("promote pending request of day %s: empty reply", day)
	}
	switch code, _ := res[0].(int64); code {
	case 0:
		return Promotion{Busy: true}, nil
	case -1:
		return Promotion{}, s.forgetPending(ctx, day)
	}
	if len(res) != 4 {
		return Promotion{}, fmt.Errorf("promote pending request of day %s: unexpected reply %v", day, res)
	}
	p := Promotion{Started: true}
	p.RunID, _ = res[1].(string)
	payload, _ := res[2].(string)
	p.Payload = []byte(payload)
	if p.Fence, err = parseFence(res[3]); err != nil {
		return Promotion{}, fmt.Errorf("promote pending request of day %s: %w", day, err)
	}
	return p, s.forgetPending(ctx, day)
}

var restorePendingScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 1 then
  return 0
end
redis.call('HSET', KEYS[1], 'run', ARGV[1], 'payload', ARGV[2])
return 1
`)

// RestorePending puts a promoted request that could not start back as the
// day's pending request, unless a newer one was queued meanwhile (then it
// reports false: the newer one wins, as in LeaseOrQueue).
func (s *State) RestorePending(ctx context.Context, day DayKey, runID string, payload []byte) (bool, error) {
	if err := s.indexPending(ctx, day); err != nil {
		return false, err
	}
	n, err := restorePendingScript.Run(ctx, s.rdb, []string{s.pendingKey(day)}, runID, payload).Int()
	if err != nil {
		return false, fmt.Errorf("restore pending request of day %s: %w", day, err)
	}
	return n == 1, nil
}

var renewScript = redis.NewScript(`
if redis.call('HGET', KEYS[1], 'run') == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
`)

// RenewDay restarts the ttl of the day's lease if runID still holds it;
// unlike AcquireDay it never takes a free day, so a run that already
// finished (and was released) does not hold the day again.
func (s *State) RenewDay(ctx context.Context, day DayKey, runID string, ttl time.Duration) (bool, error) {
	if err := checkTTL(ttl); err != nil {
		return false, fmt.Errorf("renew lease of day %s: %w", day, err)
	}
	n, err := renewScript.Run(ctx, s.rdb, []string{s.leaseKey(day)}, runID, ttl.Milliseconds()).Int()
	if err != nil {
		return false, fmt.Errorf("renew lease of day %s: %w", day, err)
	}
	return n == 1, nil
}

var releaseScript = redis.NewScript(`
if redis.call('HGET', KEYS[1], 'run') == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
`)

// ReleaseDay frees the day's lease if runID holds it; a lease taken over by
// another run (after expiry) is left alone.
func (s *State) ReleaseDay(ctx context.Context, day DayKey, runID string) error {
	if err := releaseScript.Run(ctx, s.rdb, []string{s.leaseKey(day)}, runID).Err(); err != nil {
		return fmt.Errorf("release day %s: %w", day, err)
	}
	return nil
}

// DayHolder returns the run holding the day's lease and its fence, or ""
// when the day is free.
func (s *State) DayHolder(ctx context.Context, day DayKey) (string, int64, error) {
	vals, err := s.rdb.HMGet(ctx, s.leaseKey(day), "run", "fence").Result()
	if err != nil {
		return "", 0, fmt.Errorf("read holder of day %s: %w", day, err)
	}
	run, _ := vals[0].(string)
	if run == "" {
		return "", 0, nil
	}
	fence, err := parseFence(vals[1])
	if err != nil {
		return "", 0, fmt.Errorf("read holder of day %s: %w", day, err)
	}
	return run, fence, nil
}

// PendingRun returns the run id of the day's pending request, if any.
func (s *State) PendingRun(ctx context.Context, day DayKey) (string, bool, error) {
	run, err := s.rdb.HGet(ctx, s.pendingKey(day), "run").Result()
	if errors.Is(err, redis.Nil) {
		return "", false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("read pending request of day %s: %w", day, err)
	}
	return run, true, nil
}

// PendingDays lists the days with a queued request, sorted. A day may be
// listed whose request was just started; PromotePending then finds
// nothing and drops it from the list.
func (s *State) PendingDays(ctx context.Context) ([]DayKey, error) {
	members, err := s.rdb.SMembers(ctx, s.pendingSetKey()).Result()
	if err != nil {
		return nil, fmt.Errorf("list pending days: %w", err)
	}
	sort.Strings(members)
	days := make([]DayKey, 0, len(members))
	for _, m := range members {
		d, err := parseMember(m)
		if err != nil {
			return nil, fmt.Errorf("list pending days: %w", err)
		}
		days = append(days, d)
	}
	return days, nil
}

func (s *State) indexPending(ctx context.Context, day DayKey) error {
	if err := s.rdb.SAdd(ctx, s.pendingSetKey(), day.member()).Err(); err != nil {
		return fmt.Errorf("index pending day %s: %w", day, err)
	}
	return nil
}

// forgetPending drops the day from the index once it has no pending
// request; one queued meanwhile (after the check) is indexed again here or
// by its own LeaseOrQueue, which indexes after queueing.
func (s *State) forgetPending(ctx context.Context, day DayKey) error {
	if err := s.rdb.SRem(ctx, s.pendingSetKey(), day.member()).Err(); err != nil {
		return fmt.Errorf("unindex pending day %s: %w", day, err)
	}
	n, err := s.rdb.Exists(ctx, s.pendingKey(day)).Result()
	if err != nil {
		return fmt.Errorf("check pending day %s: %w", day, err)
	}
	if n > 0 {
		return s.indexPending(ctx, day)
	}
	return nil
}

// Once reports whether key is seen for the first time within ttl.
func (s *State) Once(ctx context.Context, key string, ttl time.Duration) (bool, error) {
	first, err := s.rdb.SetNX(ctx, s.key("once", key), "1", ttl).Result()
	if err != nil {
		return false, fmt.Errorf("dedupe %s: %w", key, err)
	}
	return first, nil
}

// Ping checks that Redis answers.
func (s *State) Ping(ctx context.Context) error {
	if err := s.rdb.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("ping redis: %w", err)
	}
	return nil
}

// ResetTrigger reopens the project and type's window at once: for a call
// that was let through but could not start anything.
func (s *State) ResetTrigger(ctx context.Context, project, typ string) error {
	if err := s.rdb.Del(ctx, s.triggerKey(project, typ)).Err(); err != nil {
		return fmt.Errorf("reset trigger window %s/%s: %w", project, typ, err)
	}
	return nil
}
