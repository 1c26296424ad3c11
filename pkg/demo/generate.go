package demo

import (
	"math/rand/v2"
	"strconv"
	"strings"
	"time"

	"cloud.google.com/go/civil"

	"github.com/sluicehq/sluice/pkg/vocab"
)

// Seed streams keep the generators of one day independent of each other.
const (
	streamEvents  = 1
	streamMetrics = 2
	streamAdd     = 3
)

// Event is one row of the events table. A field's Null flag marks SQL NULL.
type Event struct {
	EventID     string
	Date        civil.Date
	TS          time.Time // event_ts, UTC
	TimeS       int64     // event_time_s: epoch seconds (milliseconds in a bad row)
	Name        string
	NameNull    bool
	Value       string
	ValueNull   bool
	UserID      string
	UserNull    bool
	DeviceID    string
	DeviceNull  bool
	CompanyID   int64
	CompanyNull bool
	Country     string
	Platform    string
	Properties  string // a JSON object, or broken JSON in a bad row

	Reason vocab.Reason // the reason class the mapper must reject it for; "" when good
}

// Metric is one row of the metrics table.
type Metric struct {
	Date        civil.Date
	UnitID      string
	IDType      string
	Name        string
	Value       float64
	ValueNull   bool
	Numerator   float64
	NumNull     bool
	Denominator float64
	DenNull     bool

	Reason vocab.Reason
}

// weighted is a value with its relative weight.
type weighted struct {
	v string
	w int
}

// Read-only tables that shape the generated data.
var (
	funnel = [...]weighted{
		{"page_view", 50}, {"search", 12}, {"add_to_cart", 14}, {"checkout", 7},
		{"purchase", 5}, {"signup", 4}, {"login", 6}, {"experiment_exposure", 2},
	}
	countries = [...]weighted{
		{"US", 40}, {"GB", 10}, {"DE", 9}, {"FR", 7}, {"IN", 8}, {"BR", 6},
		{"CA", 6}, {"JP", 5}, {"AU", 4}, {"NL", 3}, {"MX", 2},
	}
	platforms  = [...]weighted{{"web", 55}, {"ios", 25}, {"android", 20}}
	referrers  = [...]string{"google", "direct", "newsletter", "facebook", "bing", "partner_site"}
	campaigns  = [...]string{"spring_sale", "retargeting", "brand", "none"}
	searches   = [...]string{"running shoes", "rain jacket", "yoga mat", "coffee grinder", "usb-c cable", "desk lamp", "backpack"}
	pages      = [...]string{"/", "/products", "/products/sku-", "/cart", "/pricing", "/blog/spring-guide", "/account"}
	plans      = [...]string{"free", "starter", "pro", "enterprise"}
	currencies = [...]string{"USD", "EUR", "GBP"}
	metrics    = [...]string{"revenue_usd", "sessions", "orders", "page_views", "conversion_rate", "avg_order_value"}
)

func pick(r *rand.Rand, table []weighted) string {
	total := 0
	for _, x := range table {
		total += x.w
	}
	n := r.IntN(total)
	for _, x := range table {
		if n < x.w {
			return x.v
		}
		n -= x.w
	}
	return table[len(table)-1].v
}

// eventGen produces one day's events in order. Its output is a pure
// function of (seed, day, row count, bad-row spacing).
type eventGen struct {
	r       *rand.Rand
	pcg     *rand.PCG
	seeds   blockSeeds
	day     civil.Date
	start   int64 // the day's midnight, epoch seconds (UTC)
	n       int   // produce rows [i, n)
	i       int   // next row
	every   int   // bad row spacing; 0 = all good
	users   int   // size of the logged-in user pool
	devices int   // size of the device pool
	unitOff int   // offset of added rows' ids so they never collide with the day's
	buf     []byte
	ev      Event
}

func newEventGen(s Spec, day civil.Date, n, every int, stream uint64, unitOff int) *eventGen {
	users := max(100, s.EventsPerDay/15)
	pcg := rand.NewPCG(0, 0)
	return &eventGen{
		r:       rand.New(pcg),
		pcg:     pcg,
		seeds:   blockSeeds{seed: s.Seed, stream: dayNumber(day)<<8 | stream},
		day:     day,
		start:   day.In(time.UTC).Unix(),
		n:       n,
		every:   every,
		users:   users,
		devices: users * 3,
		unitOff: unitOff,
		buf:     make([]byte, 0, 256),
	}
}

// next fills the generator's row and returns it, or nil when done. The row
// is reused by the next call.
func (g *eventGen) next() *Event {
	if g.i >= g.n {
		return nil
	}
	i := g.i
	g.i++
	g.seeds.at(g.pcg, i)
	r := g.r
	ev := &g.ev
	*ev = Event{Date: g.day}

	ev.EventID = g.uuid()
	ev.TimeS = g.start + r.Int64N(86400)
	ev.TS = time.Unix(ev.TimeS, 0).UTC()
	ev.Name = pick(r, funnel[:])
	ev.Country = pick(r, countries[:])
	ev.Platform = pick(r, platforms[:])

	// Three in ten events are anonymous: a device id only.
	if r.IntN(10) < 3 {
		ev.UserNull, ev.CompanyNull = true, true
		ev.DeviceID = deviceID(g.unitOff + g.users + r.IntN(g.devices))
	} else {
		u := g.unitOff + r.IntN(g.users)
		ev.UserID = userID(u)
		ev.DeviceID = deviceID(u)
		// Users of small companies carry no company id.
		if c := u % 50; c < 40 {
			ev.CompanyID = companyID(c + u%7*40)
		} else {
			ev.CompanyNull = true
		}
	}
	g.value(ev)
	g.properties(ev)

	if isBad(i, g.every) {
		g.spoil(ev, eventReasonAt(i, g.day, g.every))
	}
	return ev
}

func (g *eventGen) spoil(ev *Event, reason vocab.Reason) {
	ev.Reason = reason
	switch reason {
	case ReasonMissingEventName:
		ev.Name, ev.NameNull = "", true
	case ReasonEventNameTooLong:
		ev.Name = "page_view_" + strings.Repeat("with_an_unreasonably_long_suffix_", 5)
	case ReasonMissingIDs:
		ev.UserID, ev.UserNull = "", true
		ev.DeviceID, ev.DeviceNull = "", true
		ev.CompanyID, ev.CompanyNull = 0, true
	case ReasonInvalidMetadataJSON:
		// A writer cut off mid-object.
		ev.Properties = ev.Properties[:len(ev.Properties)/2]
	case ReasonTimestampUnit:
		ev.TimeS *= 1000
	}
}

func (g *eventGen) value(ev *Event) {
	r := g.r
	switch ev.Name {
	case "page_view":
		p := pages[r.IntN(len(pages))]
		if strings.HasSuffix(p, "-") {
			p += strconv.Itoa(1000 + r.IntN(9000))
		}
		ev.Value = p
	case "search":
		ev.Value = searches[r.IntN(len(searches))]
	case "add_to_cart":
		ev.Value = "sku-" + strconv.Itoa(1000+r.IntN(9000))
	case "checkout":
		ev.Value = strconv.Itoa(1 + r.IntN(6))
	case "purchase":
		ev.Value = price(r)
	case "signup":
		ev.Value = plans[r.IntN(len(plans))]
	default:
		ev.ValueNull = true
	}
	// Some pipelines drop the value now and then.
	if !ev.ValueNull && r.IntN(50) == 0 {
		ev.Value, ev.ValueNull = "", true
	}
}

// properties writes a JSON object with nested values: strings, numbers,
// booleans, an object and an array, so unpacking one level keeps JSON text.
func (g *eventGen) properties(ev *Event) {
	r := g.r
	b := g.buf[:0]
	b = append(b, `{"session_id":"s_`...)
	b = strconv.AppendUint(b, r.Uint64()>>24, 36)
	b = append(b, `","referrer":"`...)
	b = append(b, referrers[r.IntN(len(referrers))]...)
	b = append(b, `","utm":{"campaign":"`...)
	b = append(b, campaigns[r.IntN(len(campaigns))]...)
	b = append(b, `","medium":"cpc"},"is_mobile":`...)
	b = strconv.AppendBool(b, ev.Platform != "web")
	switch ev.Name {
	case "purchase", "checkout", "add_to_cart":
		b = append(b, `,"cart":{"items":`...)
		b = strconv.AppendInt(b, int64(1+r.IntN(6)), 10)
		b = append(b, `,"currency":"`...)
		b = append(b, currencies[r.IntN(len(currencies))]...)
		b = append(b, `"},"coupon":null`...)
	case "experiment_exposure":
		b = append(b, `,"experiment":"checkout_redesign","group":"`...)
		if r.IntN(2) == 0 {
			b = append(b, "control"...)
		} else {
			b = append(b, "test"...)
		}
		b = append(b, '"')
	}
	b = append(b, `,"tags":["`...)
	b = append(b, ev.Platform...)
	b = append(b, `","`...)
	b = append(b, ev.Country...)
	b = append(b, `"],"screen_width":`...)
	b = strconv.AppendInt(b, int64(360+r.IntN(1600)), 10)
	b = append(b, '}')
	g.buf = b
	ev.Properties = string(b)
}

// uuid is a random version-4 UUID drawn from the generator's stream.
func (g *eventGen) uuid() string {
	const hex = "0123456789abcdef"
	var raw [16]byte
	a, b := g.r.Uint64(), g.r.Uint64()
	for k := range 8 {
		raw[k] = byte(a >> (8 * k))
		raw[8+k] = byte(b >> (8 * k))
	}
	raw[6] = raw[6]&0x0f | 0x40
	raw[8] = raw[8]&0x3f | 0x80
	var out [36]byte
	j := 0
	for k, c := range raw {
		if k == 4 || k == 6 || k == 8 || k == 10 {
			out[j] = '-'
			j++
		}
		out[j], out[j+1] = hex[c>>4], hex[c&0x0f]
		j += 2
	}
	return string(out[:])
}

func price(r *rand.Rand) string {
	cents := 199 + r.IntN(25000)
	// Prices end in .99 or .49 more often than not.
	switch r.IntN(3) {
	case 0:
		cents = cents/100*100 + 99
	case 1:
		cents = cents/100*100 + 49
	}
	s := strconv.Itoa(cents)
	return s[:len(s)-2] + "." + s[len(s)-2:]
}

func userID(u int) string { return "usr_" + pad(u, 7) }

func deviceID(u int) string {
	// Multiplying by an odd constant is a bijection on uint64: distinct
	// units keep distinct, random-looking device ids.
	h := strconv.FormatUint(uint64(u)*0x9E3779B97F4A7C15, 16)
	return "dev_" + strings.Repeat("0", 16-len(h)) + h
}

func companyID(c int) int64 { return int64(1000 + c) }

func pad(n, width int) string {
	s := strconv.Itoa(n)
	if len(s) >= width {
		return s
	}
	return strings.Repeat("0", width-len(s)) + s
}

// metricGen produces one day's metrics in order. Row i is unit i/len(metrics)
// and metric i%len(metrics), so (unit_id, id_type, metric_name) is unique.
type metricGen struct {
	r       *rand.Rand
	pcg     *rand.PCG
	seeds   blockSeeds
	day     civil.Date
	n, i    int
	every   int
	unitOff int
	m       Metric
}

func newMetricGen(s Spec, day civil.Date, n, every int, stream uint64, unitOff int) *metricGen {
	pcg := rand.NewPCG(0, 0)
	return &metricGen{
		r:       rand.New(pcg),
		pcg:     pcg,
		seeds:   blockSeeds{seed: s.Seed, stream: dayNumber(day)<<8 | stream},
		day:     day,
		n:       n,
		every:   every,
		unitOff: unitOff,
	}
}

func (g *metricGen) next() *Metric {
	if g.i >= g.n {
		return nil
	}
	i := g.i
	g.i++
	g.seeds.at(g.pcg, i)
	r := g.r
	m := &g.m
	*m = Metric{Date: g.day}
	u := g.unitOff + i/len(metrics)
	m.Name = metrics[i%len(metrics)]
	switch k := u % 20; {
	case k < 12:
		m.IDType, m.UnitID = "userID", userID(u)
	case k < 17:
		m.IDType, m.UnitID = "stableID", deviceID(u)
	default:
		// Integer ids arrive as strings of digits.
		m.IDType, m.UnitID = "companyID", strconv.FormatInt(companyID(u), 10)
	}
	m.NumNull, m.DenNull = true, true
	switch m.Name {
	case "revenue_usd":
		m.Value = float64(r.IntN(50000)) / 100
	case "sessions":
		m.Value = float64(1 + r.IntN(12))
	case "orders":
		m.Value = float64(r.IntN(4))
	case "page_views":
		m.Value = float64(1 + r.IntN(80))
	case "conversion_rate":
		m.ValueNull, m.NumNull, m.DenNull = true, false, false
		m.Denominator = float64(1 + r.IntN(12))
		m.Numerator = float64(r.IntN(int(m.Denominator) + 1))
	case "avg_order_value":
		m.ValueNull, m.NumNull, m.DenNull = true, false, false
		m.Denominator = float64(1 + r.IntN(4))
		m.Numerator = float64(r.IntN(40000)) / 100 * m.Denominator
	}
	// A NULL value is 0, not an error: the mapper must keep these rows.
	if !m.ValueNull && r.IntN(100) == 0 {
		m.Value, m.ValueNull = 0, true
	}

	if isBad(i, g.every) {
		switch d := metricDefects[defectAt(i, g.day, g.every, len(metricDefects))]; d {
		case string(ReasonNullDenominator):
			m.Reason = ReasonNullDenominator
			m.Value, m.ValueNull = 0, true
			m.Numerator, m.NumNull = float64(1+r.IntN(5)), false
			m.Denominator, m.DenNull = 0, true
		default:
			m.Reason = ReasonUnknownIDType
			m.IDType = d
		}
	}
	return m
}

// blockRows is how many rows share one random stream. Each block is seeded
// on its own, so blocks can be generated (and seeded) in parallel and still
// give the same rows.
const blockRows = 1 << 14

// blockSeeds reseeds a generator at the start of each block.
type blockSeeds struct{ seed, stream uint64 }

func (b blockSeeds) at(pcg *rand.PCG, i int) {
	if i%blockRows == 0 {
		pcg.Seed(b.seed^uint64(i/blockRows)*0x9E3779B97F4A7C15, b.stream)
	}
}

// from starts a fresh generator at row i, which must begin a block.
func (g *eventGen) from(i int) *eventGen   { g.i = i; return g }
func (g *metricGen) from(i int) *metricGen { g.i = i; return g }

// Events calls fn with every row of s's events table for day, in order.
// The row is reused between calls.
func Events(s Spec, day civil.Date, fn func(*Event) error) error {
	g := newEventGen(s, day, s.EventsPerDay, s.BadRowEvery, streamEvents, 0)
	for ev := g.next(); ev != nil; ev = g.next() {
		if err := fn(ev); err != nil {
			return err
		}
	}
	return nil
}

// Metrics calls fn with every row of s's metrics table for day, in order.
// The row is reused between calls.
func Metrics(s Spec, day civil.Date, fn func(*Metric) error) error {
	g := newMetricGen(s, day, s.MetricsPerDay, s.BadRowEvery, streamMetrics, 0)
	for m := g.next(); m != nil; m = g.next() {
		if err := fn(m); err != nil {
			return err
		}
	}
	return nil
}
