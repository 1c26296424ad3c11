package kafka

import (
	"bytes"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/sluicehq/sluice/pkg/vocab"
	"github.com/sluicehq/sluice/schemas"
)

func TestMessageDeadLetter(t *testing.T) {
	codecs, err := schemas.NewCodecs()
	if err != nil {
		t.Fatal(err)
	}
	src := &kgo.Record{Topic: "t.ingest-requests", Key: []byte("k"), Value: []byte{0xff, 0x01}}
	at := time.UnixMilli(1700000000123)
	run := schemas.DeadLetter{RunID: "r1", Project: "p", Ingestion: "ing", Date: "2024-03-01", Position: 7, Reason: "overwritten"}
	rec, err := MessageDeadLetter(Config{TopicPrefix: "t."}, codecs, src, run, vocab.ReasonUnknownIngestion, "no such ingestion", at)
	if err != nil {
		t.Fatal(err)
	}
	if rec.Topic != "t."+schemas.TopicDeadLetter || string(rec.Key) != "k" {
		t.Fatalf("record on %s under %q, want t.%s under the source's key", rec.Topic, rec.Key, schemas.TopicDeadLetter)
	}
	var dl schemas.DeadLetter
	if err := codecs.Decode(codecs.DeadLetter, rec.Value, &dl); err != nil {
		t.Fatal(err)
	}
	if dl.SourceTopic != src.Topic || dl.Reason != string(vocab.ReasonUnknownIngestion) || dl.Detail != "no such ingestion" ||
		dl.RunID != "r1" || dl.Project != "p" || dl.Ingestion != "ing" || dl.Date != "2024-03-01" ||
		dl.Position != -1 || !bytes.Equal(dl.Raw, src.Value) || dl.At != at.UnixMilli() || len(dl.Values) != 0 {
		t.Fatalf("dead letter %+v", dl)
	}
}
