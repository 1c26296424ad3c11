package mapping

import (
	"encoding/binary"
	"math"
	"strconv"
	"testing"

	"cloud.google.com/go/civil"

	"github.com/sluicehq/sluice/pkg/config"
	"github.com/sluicehq/sluice/pkg/warehouse"
	"github.com/sluicehq/sluice/schemas"
)

// fuzzBytes hands out fuzz input a little at a time, zeros once drained.
type fuzzBytes struct{ b []byte }

func (f *fuzzBytes) byte() byte {
	if len(f.b) == 0 {
		return 0
	}
	c := f.b[0]
	f.b = f.b[1:]
	return c
}

func (f *fuzzBytes) u64() uint64 {
	var buf [8]byte
	for i := range buf {
		buf[i] = f.byte()
	}
	return binary.LittleEndian.Uint64(buf[:])
}

func (f *fuzzBytes) str() string {
	n := int(f.byte() % 40)
	if n > len(f.b) {
		n = len(f.b)
	}
	s := string(f.b[:n])
	f.b = f.b[n:]
	return s
}

var fuzzTypes = []string{schemas.TypeBoolean, schemas.TypeLong, schemas.TypeDouble, schemas.TypeDecimal, schemas.TypeString, schemas.TypeBytes, schemas.TypeDate, schemas.TypeTimestamp, schemas.TypeJSON}

// Interesting values the fuzzer would take long to find on its own.
var fuzzStrings = []string{
	"", " ", "purchase", "userID", "UserID", "2024-03-10", "2024-03-11", "1710072000", "1710072000000", "12.50", "-0",
	`{"a":1,"b":{"c":[1,2]},"d":null,"e":"\u00e9","a":"dup"}`, `{"x":"\ud800"}`, `[1]`, `{`, `{"k":"\u0000"}`, "NaN", "1e400", "\xff",
}

// fuzzBatch builds a raw batch holding every column the events and metrics
// test mappings read, with types, nulls and values drawn from data.
func fuzzBatch(data []byte, rows int) *schemas.RawBatch {
	f := &fuzzBytes{b: data}
	names := []string{"name", "ts", "user_id", "device_id", "value", "plan", "country", "meta", "unit", "id_type", "ds", "metric", "num", "den"}
	raw := &schemas.RawBatch{Date: testDay, FirstRow: int64(f.byte()), RowCount: int64(rows)}
	for _, name := range names {
		ctl := f.byte()
		if ctl == 255 {
			continue // a missing column
		}
		c := schemas.Column{Name: name, Type: fuzzTypes[int(ctl)%len(fuzzTypes)]}
		n := rows
		if ctl == 254 {
			n = rows / 2 // a malformed, short column
		}
		for range n {
			b := f.byte()
			null := byte(0)
			if b%5 == 0 {
				null = 1
			}
			c.Nulls = append(c.Nulls, null)
			switch c.Type {
			case schemas.TypeBoolean:
				c.Bools = append(c.Bools, b%2 == 0)
			case schemas.TypeLong, schemas.TypeDate, schemas.TypeTimestamp:
				v := int64(f.u64())
				switch b % 4 {
				case 1:
					v = noon + v%100000
				case 2:
					v = noon*1000 + v%100000
				case 3:
					v = 19792 + v%3 // around 2024-03-10 in days
				}
				c.Longs = append(c.Longs, v)
			case schemas.TypeDouble:
				v := math.Float64frombits(f.u64())
				if b%3 == 1 {
					v = float64(noon) + float64(b)/7
				}
				c.Doubles = append(c.Doubles, v)
			default:
				var s string
				switch b % 3 {
				case 0:
					s = fuzzStrings[int(f.byte())%len(fuzzStrings)]
				case 1:
					s = f.str()
				default:
					s = strconv.Itoa(int(f.u64() % 1e12))
				}
				c.Strings = append(c.Strings, s)
			}
		}
		raw.Columns = append(raw.Columns, c)
	}
	return raw
}

func FuzzMap(f *testing.F) {
	f.Add([]byte{}, uint8(0), uint8(0))
	f.Add([]byte("\x04\x04\x01\x04\x04\x04\x04\x04\x04\x04\x04\x06\x04\x02\x02"), uint8(3), uint8(1))
	f.Add([]byte("purchase 1710072000 {\"a\":{\"b\":[1]}} userID 2024-03-10"), uint8(8), uint8(3))
	f.Fuzz(func(t *testing.T, data []byte, rows, unit uint8) {
		raw := fuzzBatch(data, int(rows%64))
		units := []string{"", UnitSeconds, UnitMilliseconds, UnitMicroseconds, UnitAuto}
		ev := eventsIngestion()
		ev.Mapping.TimestampUnit = units[int(unit)%len(units)]
		for _, ing := range []config.Ingestion{ev, metricsIngestion()} {
			m, err := New(ing, testIDTypes)
			if err != nil {
				t.Fatal(err)
			}
			var out schemas.MappedBatch
			calls := 0
			m.Map(raw, &out, func(r Rejection) {
				calls++
				if r.Reason == "" || r.Detail == "" {
					t.Fatalf("rejection without reason or detail: %+v", r)
				}
				_ = r.Values()
			})
			checkAccounting(t, raw, &out, calls)
			for _, e := range out.Events {
				if len(e.UnitIDs) == 0 || e.EventName == "" || !validMetadata(e.MetadataJSON) {
					t.Fatalf("bad event %+v", e)
				}
			}
			// Mapping the same batch again into the reused out gives the same.
			before := len(out.Events) + len(out.Metrics)
			m.Map(raw, &out, nil)
			checkAccounting(t, raw, &out, calls)
			if len(out.Events)+len(out.Metrics) != before {
				t.Fatalf("remapping changed the record count: %d then %d", before, len(out.Events)+len(out.Metrics))
			}
			rep := Validate(ing, testIDTypes, &warehouse.Batch{Columns: raw.Columns, Rows: int(raw.RowCount)}, civil.Date{Year: 2024, Month: 3, Day: 10})
			if rep.Mapped+rep.Rejected != rep.SampleRows || rep.Mapped != before {
				t.Fatalf("validate: mapped %d + rejected %d, sample %d, Map mapped %d", rep.Mapped, rep.Rejected, rep.SampleRows, before)
			}
			_ = rep.Text()
		}
	})
}
