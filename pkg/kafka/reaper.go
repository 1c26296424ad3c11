package kafka

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// reapEvery is how often the reaper looks for silent members; reapGrace is
// how long past its session timeout a member may stay silent before the
// reaper acts, so kfake's own session expiry of an ordinary dead member
// always goes first.
const (
	reapEvery = 500 * time.Millisecond
	reapGrace = time.Second
)

// sessionReaper gives kfake's classic group coordinator the session expiry
// it lacks for one kind of member: a new member whose process dies while
// its JoinGroup is parked (the group is waiting for other members to
// rejoin). kfake stops the member's pending-join timer when the member
// joins and starts a session timer only once a reply reaches it; the reply
// to a dead connection fails, so the member stays in the group with no
// timer at all. The rebalance completes with it, it is assigned partitions,
// and nobody consumes them until some later rebalance or a broker restart
// (Kafka itself schedules every member's session expiry when a join
// completes, delivered or not).
//
// The reaper watches each member's group requests (JoinGroup with a member
// id, SyncGroup, Heartbeat, OffsetCommit) and, when a member of a Stable
// group has been silent for longer than the session timeout it joined
// with, sends the LeaveGroup the dead process never sent. Only Stable
// groups are reaped: while a rebalance is in progress kfake's rebalance and
// pending-sync timers remove members that do not rejoin or sync, and a
// member parked in JoinGroup legitimately sends nothing.
type sessionReaper struct {
	cluster *kfake.Cluster
	client  *kgo.Client // sends the LeaveGroups
	logger  *slog.Logger
	now     func() time.Time

	mu   sync.Mutex
	seen map[groupMember]memberSeen
}

type groupMember struct{ group, member string }

type memberSeen struct {
	at      time.Time
	session time.Duration
}

func newSessionReaper(c *kfake.Cluster, logger *slog.Logger) (*sessionReaper, error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.ClientID("sluice-broker-reaper"))
	if err != nil {
		return nil, err
	}
	r := &sessionReaper{cluster: c, client: cl, logger: logger, now: time.Now, seen: map[groupMember]memberSeen{}}
	for _, key := range []kmsg.Key{kmsg.JoinGroup, kmsg.SyncGroup, kmsg.Heartbeat, kmsg.OffsetCommit, kmsg.LeaveGroup} {
		// Observe only: not handled, so kfake processes the request as
		// usual and keeps the control function.
		c.ControlKey(int16(key), func(req kmsg.Request) (kmsg.Response, error, bool) {
			r.observe(req)
			return nil, nil, false
		})
	}
	return r, nil
}

// observe runs on kfake's request loop: it must not call back into the
// cluster.
func (r *sessionReaper) observe(req kmsg.Request) {
	now := r.now()
	r.mu.Lock()
	defer r.mu.Unlock()
	touch := func(group, member string) {
		k := groupMember{group, member}
		if s, ok := r.seen[k]; ok {
			r.seen[k] = memberSeen{at: now, session: s.session}
		}
	}
	switch req := req.(type) {
	case *kmsg.JoinGroupRequest:
		if req.MemberID != "" { // the first join of a member has no id yet
			r.seen[groupMember{req.Group, req.MemberID}] = memberSeen{at: now, session: time.Duration(req.SessionTimeoutMillis) * time.Millisecond}
		}
	case *kmsg.SyncGroupRequest:
		touch(req.Group, req.MemberID)
	case *kmsg.HeartbeatRequest:
		touch(req.Group, req.MemberID)
	case *kmsg.OffsetCommitRequest:
		touch(req.Group, req.MemberID)
	case *kmsg.LeaveGroupRequest:
		delete(r.seen, groupMember{req.Group, req.MemberID})
		for _, m := range req.Members {
			delete(r.seen, groupMember{req.Group, m.MemberID})
		}
	}
}

// Run reaps every reapEvery until ctx is cancelled.
func (r *sessionReaper) Run(ctx context.Context) {
	t := time.NewTicker(reapEvery)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			r.reap(ctx)
		}
	}
}

// reap evicts the silent members of Stable groups and forgets members the
// coordinator no longer has.
func (r *sessionReaper) reap(ctx context.Context) {
	now := r.now()
	silent := map[string][]string{}
	var groups []string
	r.mu.Lock()
	for k, s := range r.seen {
		if _, ok := silent[k.group]; !ok {
			silent[k.group] = nil
			groups = append(groups, k.group)
		}
		if now.Sub(s.at) > s.session+reapGrace {
			silent[k.group] = append(silent[k.group], k.member)
		}
	}
	r.mu.Unlock()

	for _, group := range groups {
		info := r.cluster.GroupInfo(group)
		members := map[string]bool{}
		if info != nil {
			for _, m := range info.Members {
				members[m.MemberID] = true
			}
		}
		for _, id := range silent[group] {
			if !members[id] {
				// Evicted or left already: nothing to do.
				r.forget(group, id)
				continue
			}
			if info.State != "Stable" {
				continue
			}
			r.evict(ctx, group, id)
		}
	}
}

func (r *sessionReaper) forget(group, member string) {
	r.mu.Lock()
	delete(r.seen, groupMember{group, member})
	r.mu.Unlock()
}

func (r *sessionReaper) evict(ctx context.Context, group, member string) {
	req := kmsg.NewPtrLeaveGroupRequest()
	req.Group = group
	m := kmsg.NewLeaveGroupRequestMember()
	m.MemberID = member
	m.Reason = kmsg.StringPtr("session expired: no heartbeat within the session timeout")
	req.Members = append(req.Members, m)
	rctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	resp, err := req.RequestWith(rctx, r.client)
	if err == nil {
		err = kerr.ErrorForCode(resp.ErrorCode)
	}
	if err == nil && len(resp.Members) > 0 {
		err = kerr.ErrorForCode(resp.Members[0].ErrorCode)
	}
	switch {
	case errors.Is(err, kerr.UnknownMemberID):
		// Gone meanwhile.
	case err != nil:
		r.logger.Warn("evict a group member whose session expired", "group", group, "member", member, "err", err)
		return
	default:
		r.logger.Warn("evicted a group member whose session expired without kfake timing it out", "group", group, "member", member)
	}
	r.forget(group, member)
}

func (r *sessionReaper) Close() { r.client.Close() }
