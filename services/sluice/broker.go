package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/sluicehq/sluice/pkg/kafka"
)

// runKafka runs a standalone kfake broker: the real Kafka protocol in its
// own process, persisted to a data directory so it survives a restart
// (kill -9 included: kfake writes through to its files as it goes). The
// fault suite kills and restarts it; a laptop can use it instead of a
// Kafka cluster.
func runKafka(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("kafka", "Runs a one-broker kfake Kafka cluster until stopped, persisting its log to --data-dir.", stderr)
	addr := fs.String("addr", "127.0.0.1:9092", "where the broker listens (127.0.0.1 only)")
	dataDir := fs.String("data-dir", "", "directory the log and group offsets persist in; empty keeps everything in memory")
	partitions := fs.Int("partitions", 6, "partitions of auto-created topics")
	if code := parseFlags(fs, args); code >= 0 {
		return code
	}
	broker, err := kafka.StartEmbedded(kafka.EmbeddedConfig{Addr: *addr, DataDir: *dataDir, Partitions: int32(*partitions),
		Logger: slog.New(slog.NewTextHandler(stderr, nil))})
	if err != nil {
		fmt.Fprintln(stderr, "sluice kafka:", err)
		return exitUnhealthy
	}
	defer broker.Close()
	// One line scripts can wait for.
	fmt.Fprintf(stdout, "kafka listening on %s\n", strings.Join(broker.Addrs(), ","))
	<-ctx.Done()
	return exitOK
}
