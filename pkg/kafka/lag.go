package kafka

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// LagMonitor measures, on a fixed period, how far each consumer group's
// committed offsets trail the end of its partitions, and exports it as
// sluice_kafka_consumer_lag{group,topic,partition}. A group that is
// falling behind (or a partition stuck on a failing batch) shows here
// before it shows as a late day.
type LagMonitor struct {
	admin  *kadm.Client
	groups []string
	every  time.Duration
	logger *slog.Logger
	lag    *prometheus.GaugeVec
}

// NewLagMonitor measures groups through cl (any client of the cluster; it
// is not closed here) every period (default 15s), registering the gauge
// on reg when reg is non-nil.
func NewLagMonitor(cl *kgo.Client, groups []string, every time.Duration, reg prometheus.Registerer, logger *slog.Logger) (*LagMonitor, error) {
	if every <= 0 {
		every = 15 * time.Second
	}
	if logger == nil {
		logger = slog.Default()
	}
	m := &LagMonitor{admin: kadm.NewClient(cl), groups: groups, every: every, logger: logger,
		lag: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "sluice_kafka_consumer_lag",
			Help: "Records between a consumer group's committed offset and the end of the partition.",
		}, []string{"group", "topic", "partition"}),
	}
	if reg != nil {
		if err := reg.Register(m.lag); err != nil {
			return nil, fmt.Errorf("register consumer lag metric: %w", err)
		}
	}
	return m, nil
}

// Run measures until ctx is cancelled.
func (m *LagMonitor) Run(ctx context.Context) error {
	t := time.NewTicker(m.every)
	defer t.Stop()
	for {
		if err := m.Measure(ctx); err != nil && ctx.Err() == nil {
			m.logger.Warn("measure consumer lag", "err", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// Measure takes one measurement and updates the gauge. Partitions whose
// lag cannot be known (no commit yet is lag from the start; a listing
// error) keep their previous value.
func (m *LagMonitor) Measure(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, m.every)
	defer cancel()
	lags, err := m.admin.Lag(ctx, m.groups...)
	if err != nil {
		return fmt.Errorf("list lag of %v: %w", m.groups, err)
	}
	for group, gl := range lags {
		if err := gl.Error(); err != nil {
			m.logger.Debug("consumer lag unknown", "group", group, "err", err)
			continue
		}
		for _, l := range gl.Lag.Sorted() {
			if l.Err != nil || l.Lag < 0 {
				continue
			}
			m.lag.WithLabelValues(group, l.Topic, strconv.Itoa(int(l.Partition))).Set(float64(l.Lag))
		}
	}
	return nil
}
