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

// reapEvery is how often the reaper looks at the groups; reapGrace is how
// long past its session timeout a member may stay silent before the reaper
// acts, so kfake's own session expiry of an ordinary dead member always
// goes first. reapEvery also bounds how precisely the reaper dates a
// group's state changes (see mayBeParked).
const (
	reapEvery = 250 * time.Millisecond
	reapGrace = time.Second
)

// sessionReaper gives kfake's classic group coordinator the session expiry
// it lacks for one kind of member: a new member whose process dies while
// its JoinGroup is parked (the group is waiting for other members to
// rejoin). kfake stops the member's pending-join timer when the member
// joins and starts a session timer only once a reply reaches it; the reply
// to a dead connection fails, so the member stays in the group with no
// timer at all. The rebalance completes with it and, depending on what
// happens next, the group is stuck until something else moves it:
//
//   - Stable: the dead member is assigned partitions and nobody consumes
//     them until some later rebalance or a broker restart;
//   - PreparingRebalance (a new member joined before the group was
//     Stable): the round waits for the dead member to rejoin until the
//     rebalance timeout (60 s, restarted by every join);
//   - CompletingRebalance (the dead member was made leader): the round
//     waits for its SyncGroup until the rebalance timeout.
//
// Kafka itself schedules every member's session expiry when a join
// completes, delivered or not.
//
// The reaper watches each member's group requests (JoinGroup with a member
// id, SyncGroup, Heartbeat, OffsetCommit) and, when a member has been
// silent for longer than the session timeout it joined with, sends the
// LeaveGroup the dead process never sent, whatever the group's state. A
// live member is silent only while its request is parked: a JoinGroup
// while the group is PreparingRebalance, or a SyncGroup while it is
// CompletingRebalance, waiting for the others. Every parked request is
// answered when the group leaves that state, so a member whose last request
// was sent before the group's last observed change of state or generation
// is not parked, however long ago that was.
type sessionReaper struct {
	cluster *kfake.Cluster
	client  *kgo.Client // sends the LeaveGroups
	logger  *slog.Logger
	now     func() time.Time

	mu     sync.Mutex
	seen   map[groupMember]memberSeen
	groups map[string]groupSeen // only the reaping goroutine uses it
}

type groupMember struct{ group, member string }

// memberSeen is a member's last group request.
type memberSeen struct {
	at      time.Time
	session time.Duration
	key     kmsg.Key // JoinGroup and SyncGroup may be parked
}

// groupSeen is what the reaper last saw of a group.
type groupSeen struct {
	state  string
	epoch  int32
	seenAt time.Time // just before the look that saw state and epoch
	// The state or generation last changed after changedAfter (the last
	// look that still saw the previous ones) and by changedBy (the look
	// that saw the change).
	changedAfter, changedBy time.Time
}

func newSessionReaper(c *kfake.Cluster, logger *slog.Logger) (*sessionReaper, error) {
	cl, err := kgo.NewClient(kgo.SeedBrokers(c.ListenAddrs()...), kgo.ClientID("sluice-broker-reaper"))
	if err != nil {
		return nil, err
	}
	r := &sessionReaper{cluster: c, client: cl, logger: logger, now: time.Now,
		seen: map[groupMember]memberSeen{}, groups: map[string]groupSeen{}}
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
	touch := func(group, member string, key kmsg.Key) {
		k := groupMember{group, member}
		if s, ok := r.seen[k]; ok {
			r.seen[k] = memberSeen{at: now, session: s.session, key: key}
		}
	}
	switch req := req.(type) {
	case *kmsg.JoinGroupRequest:
		if req.MemberID != "" { // the first join of a member has no id yet
			r.seen[groupMember{req.Group, req.MemberID}] = memberSeen{at: now,
				session: time.Duration(req.SessionTimeoutMillis) * time.Millisecond, key: kmsg.JoinGroup}
		}
	case *kmsg.SyncGroupRequest:
		touch(req.Group, req.MemberID, kmsg.SyncGroup)
	case *kmsg.HeartbeatRequest:
		touch(req.Group, req.MemberID, kmsg.Heartbeat)
	case *kmsg.OffsetCommitRequest:
		touch(req.Group, req.MemberID, kmsg.OffsetCommit)
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

// reap evicts the members that are dead by silentTooLong and forgets
// members the coordinator no longer has.
func (r *sessionReaper) reap(ctx context.Context) {
	byGroup := map[string][]seenMember{}
	r.mu.Lock()
	for k, s := range r.seen {
		byGroup[k.group] = append(byGroup[k.group], seenMember{k.member, s})
	}
	r.mu.Unlock()
	// Keep looking at groups whose members all left: a member may join
	// again, and its requests are dated against the group's changes.
	for group := range r.groups {
		if _, ok := byGroup[group]; !ok {
			byGroup[group] = nil
		}
	}

	for group, seen := range byGroup {
		look := r.now()
		info := r.cluster.GroupInfo(group)
		g := r.noteGroup(group, info, look)
		members := map[string]bool{}
		if info != nil {
			for _, m := range info.Members {
				members[m.MemberID] = true
			}
		}
		for _, m := range seen {
			if !members[m.id] {
				// Evicted or left already: nothing to do.
				r.forget(group, m.id)
				continue
			}
			if why := silentTooLong(g, m.last, look); why != "" {
				r.evict(ctx, group, g.state, m.id, why)
			}
		}
	}
}

type seenMember struct {
	id   string
	last memberSeen
}

// noteGroup records the group's state and generation as seen by a look
// that started at look, and returns what is known of it.
func (r *sessionReaper) noteGroup(group string, info *kfake.GroupInfo, look time.Time) groupSeen {
	if info == nil {
		delete(r.groups, group)
		return groupSeen{}
	}
	prev, ok := r.groups[group]
	g := groupSeen{state: info.State, epoch: info.Epoch, seenAt: look,
		changedAfter: prev.changedAfter, changedBy: prev.changedBy}
	if ok && (prev.state != info.State || prev.epoch != info.Epoch) {
		g.changedAfter, g.changedBy = prev.seenAt, look
	}
	r.groups[group] = g
	return g
}

// silentTooLong says why a member whose last request was last is dead, or
// "" while it may be alive:
//
//   - its JoinGroup was answered (the group changed state or generation
//     after it) and no SyncGroup or heartbeat followed within syncGrace
//     of that change: a live member syncs at once. This catches a dead
//     leader before kfake expels the followers waiting in SyncGroup for
//     it (kfake, unlike Kafka, lets their sessions run out meanwhile);
//   - it has sent nothing for its session timeout plus reapGrace and its
//     last request is not parked.
func silentTooLong(g groupSeen, last memberSeen, now time.Time) string {
	if last.key == kmsg.JoinGroup && last.at.Before(g.changedAfter) && now.Sub(g.changedBy) > syncGrace(last.session) {
		return "no SyncGroup after its JoinGroup was answered"
	}
	if now.Sub(last.at) > last.session+reapGrace && !mayBeParked(g, last) {
		return "session expired: no heartbeat within the session timeout"
	}
	return ""
}

// syncGrace is how long after its JoinGroup is answered a member may take
// to send its SyncGroup: well under the session timeout, the time kfake
// gives the members already waiting in SyncGroup.
func syncGrace(session time.Duration) time.Duration {
	return min(3*time.Second, session/2)
}

// mayBeParked reports whether a member's last request may still be waiting
// for its reply: a JoinGroup in a PreparingRebalance group, or a SyncGroup
// in a CompletingRebalance group, sent after the last change of the
// group's state or generation the reaper saw (a request sent before that
// change was answered by it). When the reaper has not seen a change since
// the request, it assumes the request is parked.
func mayBeParked(g groupSeen, last memberSeen) bool {
	parks := g.state == "PreparingRebalance" && last.key == kmsg.JoinGroup ||
		g.state == "CompletingRebalance" && last.key == kmsg.SyncGroup
	return parks && !last.at.Before(g.changedAfter)
}

func (r *sessionReaper) forget(group, member string) {
	r.mu.Lock()
	delete(r.seen, groupMember{group, member})
	r.mu.Unlock()
}

func (r *sessionReaper) evict(ctx context.Context, group, state, member, why string) {
	req := kmsg.NewPtrLeaveGroupRequest()
	req.Group = group
	m := kmsg.NewLeaveGroupRequestMember()
	m.MemberID = member
	m.Reason = kmsg.StringPtr(why)
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
		r.logger.Warn("evict a dead group member", "group", group, "state", state, "member", member, "why", why, "err", err)
		return
	default:
		r.logger.Warn("evicted a dead group member kfake kept", "group", group, "state", state, "member", member, "why", why)
	}
	r.forget(group, member)
}

func (r *sessionReaper) Close() { r.client.Close() }
