package kafka

import (
	"fmt"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluicehq/sluice/pkg/vocab"
	"github.com/sluicehq/sluice/schemas"
)

// MessageDeadLetter is the dead-letter record of a whole record src that
// cannot be processed (undecodable, or a request naming nothing known):
// its topic, reason, detail and raw bytes, position -1, under src's key.
// run carries what is known of the run (its ids, project, ingestion,
// date); its other fields are set here. Every service's poison path
// builds its record with this, so the topic holds one shape.
func MessageDeadLetter(cfg Config, codecs *schemas.Codecs, src *kgo.Record, run schemas.DeadLetter, reason vocab.Reason, detail string, at time.Time) (*kgo.Record, error) {
	dl := run
	dl.SourceTopic, dl.Reason, dl.Detail = src.Topic, string(reason), detail
	dl.Position, dl.Values, dl.Raw, dl.At = -1, map[string]string{}, src.Value, at.UnixMilli()
	data, err := codecs.Encode(codecs.DeadLetter, &dl)
	if err != nil {
		return nil, fmt.Errorf("encode dead letter of %s/%d@%d: %w", src.Topic, src.Partition, src.Offset, err)
	}
	return &kgo.Record{Topic: cfg.Topic(schemas.TopicDeadLetter), Key: src.Key, Value: data}, nil
}
