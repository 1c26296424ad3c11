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
// On Redis Cluster, put a hash tag in the prefix (for example "{sluice}:"):
// the scripts touch two keys each.
package state

import (
	"context"
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
	// Prefix starts every key; tests use a unique one each.
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

// The day's two keys share a hash tag so one script may touch both.
func (s *State) leaseKey(d DayKey) string { return s.key("lease", "{"+d.member()+"}") }
func (s *State) fenceKey(d DayKey) string { return s.key("fence", "{"+d.member()+"}") }
func (s *State) pendingKey(d DayKey) string {
	return s.key("pending", d.member())
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

// acquireScript takes or renews the day's lease.
// KEYS: lease, fence. ARGV: run id, ttl ms, now µs, fence memory ms.
// Returns {1, fence} when held by the run afterwards, {0, ""} otherwise.
// The fence is max(last issued + 1, now µs). The arithmetic stays in Redis
// integers (INCR) or in the caller's string, never a Lua number printed
// back, so no precision is lost on 16-digit values.
var acquireScript = redis.NewScript(`
local holder = redis.call('HGET', KEYS[1], 'run')
if holder then
  if holder == ARGV[1] then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return {1, redis.call('HGET', KEYS[1], 'fence')}
  end
  return {0, ''}
end
local last = redis.call('GET', KEYS[2])
if last and tonumber(last) >= tonumber(ARGV[3]) then
  redis.call('INCR', KEYS[2])
else
  redis.call('SET', KEYS[2], ARGV[3])
end
redis.call('PEXPIRE', KEYS[2], ARGV[4])
local fence = redis.call('GET', KEYS[2])
redis.call('HSET', KEYS[1], 'run', ARGV[1], 'fence', fence)
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return {1, fence}
`)

// AcquireDay takes the day's lease for runID if it is free, or renews it
// (same fence, ttl restarted) if runID already holds it. The fence of a new
// lease is strictly greater than any fence issued before for that day, also
// after Redis lost its data. A lease not renewed expires after ttl, so a
// dead holder does not block the day; its fence then loses to the next one.
func (s *State) AcquireDay(ctx context.Context, day DayKey, runID string, ttl time.Duration) (int64, bool, error) {
	if runID == "" {
		return 0, false, fmt.Errorf("acquire day %s: empty run id", day)
	}
	if ttl < time.Millisecond {
		return 0, false, fmt.Errorf("acquire day %s: ttl must be at least 1ms, got %s", day, ttl)
	}
	now := s.clock().UnixMicro()
	res, err := acquireScript.Run(ctx, s.rdb, []string{s.leaseKey(day), s.fenceKey(day)},
		runID, ttl.Milliseconds(), strconv.FormatInt(now, 10), fenceMemory.Milliseconds()).Slice()
	if err != nil {
		return 0, false, fmt.Errorf("acquire day %s: %w", day, err)
	}
	if len(res) != 2 {
		return 0, false, fmt.Errorf("acquire day %s: unexpected reply %v", day, res)
	}
	if ok, _ := res[0].(int64); ok != 1 {
		return 0, false, nil
	}
	fs, _ := res[1].(string)
	fence, err := strconv.ParseInt(fs, 10, 64)
	if err != nil {
		return 0, false, fmt.Errorf("acquire day %s: fence %q: %w", day, fs, err)
	}
	return fence, true, nil
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
	fs, _ := vals[1].(string)
	fence, err := strconv.ParseInt(fs, 10, 64)
	if err != nil {
		return "", 0, fmt.Errorf("read holder of day %s: fence %q: %w", day, fs, err)
	}
	return run, fence, nil
}

var setPendingScript = redis.NewScript(`
redis.call('SET', KEYS[1], ARGV[1])
redis.call('SADD', KEYS[2], ARGV[2])
return 1
`)

// SetPending queues one request for a busy day. A day has at most one
// pending request: a newer one replaces the older, so the newest data wins
// and the day is loaded once more, not once per request.
func (s *State) SetPending(ctx context.Context, day DayKey, payload []byte) error {
	err := setPendingScript.Run(ctx, s.rdb, []string{s.pendingKey(day), s.pendingSetKey()},
		payload, day.member()).Err()
	if err != nil {
		return fmt.Errorf("queue pending request of day %s: %w", day, err)
	}
	return nil
}

// PendingDays lists the days with a queued request, sorted.
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

var takePendingScript = redis.NewScript(`
local v = redis.call('GET', KEYS[1])
redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[2], ARGV[1])
if v then
  return {1, v}
end
return {0, ''}
`)

// TakePending returns and removes the day's queued request in one step, so
// two planners never both take it.
func (s *State) TakePending(ctx context.Context, day DayKey) ([]byte, bool, error) {
	res, err := takePendingScript.Run(ctx, s.rdb, []string{s.pendingKey(day), s.pendingSetKey()}, day.member()).Slice()
	if err != nil {
		return nil, false, fmt.Errorf("take pending request of day %s: %w", day, err)
	}
	if len(res) != 2 {
		return nil, false, fmt.Errorf("take pending request of day %s: unexpected reply %v", day, res)
	}
	if ok, _ := res[0].(int64); ok != 1 {
		return nil, false, nil
	}
	v, _ := res[1].(string)
	return []byte(v), true, nil
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
