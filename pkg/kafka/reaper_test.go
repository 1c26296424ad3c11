package kafka

import (
	"context"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"
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
			broker, err := StartEmbedded(EmbeddedConfig{Addr: "127.0.0.1:0", Partitions: tt.partitions})
			if err != nil {
				t.Fatal(err)
			}
			defer broker.Close()
			const group, topic = "g", "t"
			if err := broker.Cluster().CreateTopic(topic, tt.partitions, nil); err != nil {
				t.Fatal(err)
			}
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
			final, err := c.WaitGroupInfo(ctx, group, func(g *kfake.GroupInfo) bool {
				id, _ := third.GroupMetadata()
				return g != nil && g.State == "Stable" && len(g.Members) == 1 &&
					g.Members[0].MemberID == id && g.Members[0].NumAssigned() == int(tt.partitions)
			})
			if err != nil {
				t.Fatalf("the live member never got every partition: %+v", final)
			}
		})
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
		kgo.RebalanceTimeout(5*time.Second),
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
