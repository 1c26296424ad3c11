package store

import (
	"encoding/json"
	"fmt"
	"sort"
	"unicode/utf8"

	"github.com/sluicehq/sluice/schemas"
)

// Encoding of the JSON columns the backends share. Unit ids are stored as a
// JSON object id_type → value, as the SDK sends them.

// AppendUnitIDs appends ids as a JSON object to buf, without allocating.
func AppendUnitIDs(buf []byte, ids []schemas.UnitID) []byte {
	buf = append(buf, '{')
	for i, id := range ids {
		if i > 0 {
			buf = append(buf, ',')
		}
		buf = AppendJSONString(buf, id.IDType)
		buf = append(buf, ':')
		buf = AppendJSONString(buf, id.Value)
	}
	return append(buf, '}')
}

// AppendMetadata appends an event's metadata JSON, "{}" when empty.
func AppendMetadata(buf []byte, metadataJSON string) []byte {
	if metadataJSON == "" {
		return append(buf, '{', '}')
	}
	return append(buf, metadataJSON...)
}

const hexDigits = "0123456789abcdef"

// AppendJSONString appends s as a quoted JSON string. Invalid UTF-8 becomes
// U+FFFD, as encoding/json does.
func AppendJSONString(buf []byte, s string) []byte {
	buf = append(buf, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' {
				i++
				continue
			}
			buf = append(buf, s[start:i]...)
			switch c {
			case '"', '\\':
				buf = append(buf, '\\', c)
			case '\n':
				buf = append(buf, '\\', 'n')
			case '\r':
				buf = append(buf, '\\', 'r')
			case '\t':
				buf = append(buf, '\\', 't')
			default:
				buf = append(buf, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			buf = append(buf, s[start:i]...)
			buf = append(buf, "\ufffd"...)
			i++
			start = i
			continue
		}
		i += size
	}
	buf = append(buf, s[start:]...)
	return append(buf, '"')
}

// DecodeUnitIDs parses a stored unit id object. The object does not keep
// the SDK's order, so ids come back sorted by id type.
func DecodeUnitIDs(data []byte) ([]schemas.UnitID, error) {
	var m map[string]string
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("decode unit ids: %w", err)
	}
	ids := make([]schemas.UnitID, 0, len(m))
	for k, v := range m {
		ids = append(ids, schemas.UnitID{IDType: k, Value: v})
	}
	sort.Slice(ids, func(i, j int) bool { return ids[i].IDType < ids[j].IDType })
	return ids, nil
}

// DecodeRejected parses a stored reject-count object; never returns nil.
func DecodeRejected(data []byte) (map[string]int64, error) {
	m := map[string]int64{}
	if len(data) == 0 {
		return m, nil
	}
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("decode rejected counts: %w", err)
	}
	if m == nil {
		m = map[string]int64{}
	}
	return m, nil
}

// EncodeValues encodes a rejected row's original values as a JSON object.
func EncodeValues(values map[string]string) (string, error) {
	if len(values) == 0 {
		return "{}", nil
	}
	b, err := json.Marshal(values)
	if err != nil {
		return "", fmt.Errorf("encode rejected row values: %w", err)
	}
	return string(b), nil
}

// DecodeValues parses stored rejected row values; never returns nil.
func DecodeValues(data []byte) (map[string]string, error) {
	m := map[string]string{}
	if len(data) == 0 {
		return m, nil
	}
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("decode rejected row values: %w", err)
	}
	if m == nil {
		m = map[string]string{}
	}
	return m, nil
}

// BatchRejected sums a batch's reject counts by reason.
func BatchRejected(b *schemas.MappedBatch) map[string]int64 {
	if len(b.Rejected) == 0 {
		return nil
	}
	m := make(map[string]int64, len(b.Rejected))
	for _, r := range b.Rejected {
		m[r.Reason] += r.Count
	}
	return m
}

// BatchMapped is the number of records a batch carries.
func BatchMapped(b *schemas.MappedBatch) int64 {
	if b.Type == "metrics" {
		return int64(len(b.Metrics))
	}
	if b.Type == "events" {
		return int64(len(b.Events))
	}
	return int64(len(b.Events) + len(b.Metrics))
}

// StageableBatches keeps the ROWS batches of bs, dropping duplicates of one
// (extract_id, seq) within the call. Other kinds carry no rows.
func StageableBatches(bs []*schemas.MappedBatch) []*schemas.MappedBatch {
	type key struct {
		extract string
		seq     int64
	}
	seen := make(map[key]struct{}, len(bs))
	out := make([]*schemas.MappedBatch, 0, len(bs))
	for _, b := range bs {
		if b == nil || b.Kind != schemas.KindRows {
			continue
		}
		k := key{b.ExtractID, b.Seq}
		if _, dup := seen[k]; dup {
			continue
		}
		seen[k] = struct{}{}
		out = append(out, b)
	}
	return out
}
