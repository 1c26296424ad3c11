package kafka

import (
	"context"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// TestMemberKilledWhileJoiningIsEvicted replays what the fault suite saw:
// a consumer is SIGKILLed, its restart joins and is SIGKILLed in turn while
// that join waits for the first dead member to time out, and a third
// process joins. kfake completes the rebalance with the second dead member
// (its join was counted) and never times it out, so without the broker's
// session reaper its partitions are never consumed again.
func TestMemberKilledWhileJoiningIsEvicted(t *testing.T) {
	tests := []struct {
		name       string
		partitions int32
	}{
		{"three partitions", 3},
		{"six partitions", 6},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			broker := brokerWithTopic(t, tt.partitions)
			ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
			defer cancel()
			c := broker.Cluster()

			_, killFirst := startMember(t, broker.Addrs(), group, topic)
			if _, err := c.WaitGroupStable(ctx, group, 1); err != nil {
				t.Fatalf("first member never stable: %v", err)
			}
			killFirst()

			_, killSecond := startMember(t, broker.Addrs(), group, topic)
			// The second member is in the group once its join (with the
			// id the coordinator gave it) is parked, waiting for the dead
			// first member to rejoin or time out.
			parked, err := c.WaitGroupInfo(ctx, group, func(g *kfake.GroupInfo) bool {
				return g != nil && g.State == "PreparingRebalance" && len(g.Members) == 2
			})
			if err != nil {
				t.Fatalf("second member's join never parked: %v", err)
			}
			killSecond()

			third, _ := startMember(t, broker.Addrs(), group, topic)
			defer third.Close()
			if len(parked.Members) != 2 {
				t.Fatalf("parked group: %+v", parked)
			}
			memberID(ctx, t, third)
			// The survivor must end up alone with every partition (its id
			// may change if a rebalance timed it out meanwhile).
			waitSoleOwner(ctx, t, c, third, tt.partitions)
		})
	}
}

// TestDeadMemberDoesNotHoldARebalance: a member killed while its join is
// parked has no session timer once the round completes with it; if the
// group is not Stable by the time the reaper would act (the dead member
// was made leader and never syncs, or a newcomer's join started another
// round that waits for the dead member to rejoin), kfake waits for it for
// the whole rebalance timeout (60 s), and the fault suite saw every
// partition of the group idle that long. The reaper must evict it in
// those states too.
func TestDeadMemberDoesNotHoldARebalance(t *testing.T) {
	broker := brokerWithTopic(t, 3)
	c := broker.Cluster()
	// Far below the 60 s kfake would wait without the reaper.
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()

	_, killFirst := startMember(t, broker.Addrs(), group, topic)
	if _, err := c.WaitGroupStable(ctx, group, 1); err != nil {
		t.Fatalf("first member never stable: %v", err)
	}
	killFirst()
	_, killSecond := startMember(t, broker.Addrs(), group, topic)
	if _, err := c.WaitGroupInfo(ctx, group, func(g *kfake.GroupInfo) bool {
		return g != nil && g.State == "PreparingRebalance" && len(g.Members) == 2
	}); err != nil {
		t.Fatalf("second member's join never parked: %v", err)
	}
	killSecond()
	// The first member's session runs out, the round completes with the
	// dead second member alone: it is the leader, and its SyncGroup never
	// comes.
	if _, err := c.WaitGroupInfo(ctx, group, func(g *kfake.GroupInfo) bool {
		return g != nil && g.State == "CompletingRebalance" && len(g.Members) == 1
	}); err != nil {
		t.Fatalf("the round never completed with the dead member: %v", err)
	}
	// A newcomer's join moves the group back to PreparingRebalance, where
	// it waits for the dead member to rejoin.
	third, _ := startMember(t, broker.Addrs(), group, topic)
	defer third.Close()
	waitSoleOwner(ctx, t, c, third, 3) // kfake alone waits 60 s for the dead member
}

// TestParkedJoinIsNotEvicted: a live member whose JoinGroup waits longer
// than its session timeout (another member holds the rebalance by
// heartbeating without rejoining) sends nothing meanwhile, and must keep
// its membership: evicting it would leave its parked join unanswered.
func TestParkedJoinIsNotEvicted(t *testing.T) {
	broker := brokerWithTopic(t, 3)
	c := broker.Cluster()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()

	holder := joinByHand(ctx, t, broker.Addrs(), group, topic)
	defer holder.cl.Close()
	member, _ := startMember(t, broker.Addrs(), group, topic)
	defer member.Close()
	parked, err := c.WaitGroupInfo(ctx, group, func(g *kfake.GroupInfo) bool {
		return g != nil && g.State == "PreparingRebalance" && len(g.Members) == 2
	})
	if err != nil {
		t.Fatalf("the member's join never parked: %v", err)
	}
	var parkedID string
	for _, m := range parked.Members {
		if m.MemberID != holder.id {
			parkedID = m.MemberID
		}
	}
	// The holder heartbeats (kfake keeps it) but does not rejoin: the
	// member's join stays parked for well past its 1 s session + grace.
	deadline := time.Now().Add(4 * time.Second)
	for time.Now().Before(deadline) {
		holder.heartbeat(ctx, t)
		time.Sleep(100 * time.Millisecond)
	}
	if g := c.GroupInfo(group); g == nil || g.State != "PreparingRebalance" || len(g.Members) != 2 {
		t.Fatalf("while the holder held the rebalance the group changed: %+v", g)
	}
	holder.leave(ctx, t)
	final, err := c.WaitGroupInfo(ctx, group, func(g *kfake.GroupInfo) bool {
		return g != nil && g.State == "Stable" && len(g.Members) == 1 && g.Members[0].NumAssigned() == 3
	})
	if err != nil {
		t.Fatalf("the member never got every partition: %+v", final)
	}
	if final.Members[0].MemberID != parkedID {
		t.Errorf("the parked member was evicted: it is %s now, was %s", final.Members[0].MemberID, parkedID)
	}
}

// The group and topic every reaper test uses.
const group, topic = "g", "t"

// brokerWithTopic starts an embedded broker, closed when t ends, with the
// topic of the given partitions.
func brokerWithTopic(t *testing.T, partitions int32) *Embedded {
	t.Helper()
	broker, err := StartEmbedded(EmbeddedConfig{Addr: "127.0.0.1:0", Partitions: partitions})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(broker.Close)
	if err := broker.Cluster().CreateTopic(topic, partitions, nil); err != nil {
		t.Fatal(err)
	}
	return broker
}

// waitSoleOwner waits until live is the group's only member, Stable and
// assigned every partition.
func waitSoleOwner(ctx context.Context, t *testing.T, c *kfake.Cluster, live *kgo.Client, partitions int32) {
	t.Helper()
	final, err := c.WaitGroupInfo(ctx, group, func(g *kfake.GroupInfo) bool {
		id, _ := live.GroupMetadata()
		return g != nil && g.State == "Stable" && len(g.Members) == 1 &&
			g.Members[0].MemberID == id && g.Members[0].NumAssigned() == int(partitions)
	})
	if err != nil {
		t.Fatalf("the live member never got every partition: %+v", final)
	}
}

// handMember is a group member driven request by request.
type handMember struct {
	cl         *kgo.Client
	group, id  string
	generation int32
}

// joinByHand makes a member the only one of a Stable group, holding
// every partition of topic, with raw JoinGroup and SyncGroup requests.
func joinByHand(ctx context.Context, t testing.TB, addrs []string, group, topic string) *handMember {
	t.Helper()
	cl, err := kgo.NewClient(kgo.SeedBrokers(addrs...))
	if err != nil {
		t.Fatal(err)
	}
	meta := kmsg.NewConsumerMemberMetadata()
	meta.Topics = []string{topic}
	join := kmsg.NewPtrJoinGroupRequest()
	join.Group = group
	join.SessionTimeoutMillis = 1000
	join.RebalanceTimeoutMillis = 60000
	join.ProtocolType = "consumer"
	p := kmsg.NewJoinGroupRequestProtocol()
	p.Name = "cooperative-sticky"
	p.Metadata = meta.AppendTo(nil)
	join.Protocols = append(join.Protocols, p)
	var resp *kmsg.JoinGroupResponse
	for range 2 { // the first join only hands out the member id
		if resp, err = join.RequestWith(ctx, cl); err != nil {
			t.Fatal(err)
		}
		join.MemberID = resp.MemberID
	}
	if err := kerr.ErrorForCode(resp.ErrorCode); err != nil {
		t.Fatalf("join by hand: %v", err)
	}
	assignment := kmsg.NewConsumerMemberAssignment()
	at := kmsg.NewConsumerMemberAssignmentTopic()
	at.Topic, at.Partitions = topic, []int32{0, 1, 2}
	assignment.Topics = append(assignment.Topics, at)
	sync := kmsg.NewPtrSyncGroupRequest()
	sync.Group, sync.MemberID, sync.Generation = group, resp.MemberID, resp.Generation
	sync.ProtocolType, sync.Protocol = kmsg.StringPtr("consumer"), kmsg.StringPtr("cooperative-sticky")
	ga := kmsg.NewSyncGroupRequestGroupAssignment()
	ga.MemberID, ga.MemberAssignment = resp.MemberID, assignment.AppendTo(nil)
	sync.GroupAssignment = append(sync.GroupAssignment, ga)
	sresp, err := sync.RequestWith(ctx, cl)
	if err == nil {
		err = kerr.ErrorForCode(sresp.ErrorCode)
	}
	if err != nil {
		t.Fatalf("sync by hand: %v", err)
	}
	return &handMember{cl: cl, group: group, id: resp.MemberID, generation: resp.Generation}
}

// heartbeat keeps the member's session; a rebalance in progress is not
// an error here (the member deliberately does not rejoin).
func (m *handMember) heartbeat(ctx context.Context, t testing.TB) {
	t.Helper()
	req := kmsg.NewPtrHeartbeatRequest()
	req.Group, req.MemberID, req.Generation = m.group, m.id, m.generation
	resp, err := req.RequestWith(ctx, m.cl)
	if err == nil {
		if err = kerr.ErrorForCode(resp.ErrorCode); errors.Is(err, kerr.RebalanceInProgress) {
			err = nil
		}
	}
	if err != nil {
		t.Fatalf("heartbeat by hand: %v", err)
	}
}

func (m *handMember) leave(ctx context.Context, t testing.TB) {
	t.Helper()
	req := kmsg.NewPtrLeaveGroupRequest()
	req.Group = m.group
	lm := kmsg.NewLeaveGroupRequestMember()
	lm.MemberID = m.id
	req.Members = append(req.Members, lm)
	if _, err := req.RequestWith(ctx, m.cl); err != nil {
		t.Fatalf("leave by hand: %v", err)
	}
}

// startMember starts a consumer group member whose kill drops its
// connections and refuses new ones, so it vanishes without a LeaveGroup,
// like a SIGKILLed process.
func startMember(t testing.TB, addrs []string, group, topic string) (*kgo.Client, func()) {
	t.Helper()
	d := &killableDialer{}
	cl, err := kgo.NewClient(
		kgo.SeedBrokers(addrs...),
		kgo.ConsumerGroup(group),
		kgo.ConsumeTopics(topic),
		kgo.SessionTimeout(time.Second),
		kgo.HeartbeatInterval(100*time.Millisecond),
		// franz-go's default rebalance timeout (60 s), as in the services:
		// kfake's rebalance and pending-sync timers, which run that long,
		// must not be what rescues a test group.
		kgo.Dialer(d.dial),
	)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			if cl.PollFetches(context.Background()).IsClientClosed() {
				return
			}
		}
	}()
	return cl, func() { d.kill(); cl.Close() }
}

type killableDialer struct {
	mu     sync.Mutex
	dead   bool
	conns  []net.Conn
	dialer net.Dialer
}

func (d *killableDialer) dial(ctx context.Context, network, host string) (net.Conn, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.dead {
		return nil, errors.New("killed")
	}
	c, err := d.dialer.DialContext(ctx, network, host)
	if err == nil {
		d.conns = append(d.conns, c)
	}
	return c, err
}

func (d *killableDialer) kill() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.dead = true
	for _, c := range d.conns {
		c.Close()
	}
}

// memberID waits for cl to have a member id: the coordinator hands it out
// in reply to the first JoinGroup.
func memberID(ctx context.Context, t testing.TB, cl *kgo.Client) string {
	t.Helper()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for {
		if id, _ := cl.GroupMetadata(); id != "" {
			return id
		}
		select {
		case <-ctx.Done():
			t.Fatalf("no member id: %v", ctx.Err())
		case <-tick.C:
		}
	}
}
