package trigger

import (
	"fmt"
	"time"

	"github.com/sluicehq/sluice/pkg/config"
	"github.com/sluicehq/sluice/pkg/store"
)

// statusDay is a day as the status route answers it: the store's day plus
// the schedule of its source and the time zone whose midnight bounds the
// day, so a reader knows which 24 hours "2024-03-08" covers.
type statusDay struct {
	store.Day
	Schedule string `json:"schedule"`           // "daily at 10:00" or "api_triggered"
	Timezone string `json:"timezone"`           // IANA name or fixed offset, e.g. Etc/GMT+8 (PST, no DST)
	UTCStart string `json:"utcStart,omitempty"` // when the day begins, in UTC (RFC 3339)
}

// withSchedules adds each day's schedule and time zone from the config.
func (s *Service) withSchedules(project string, days []store.Day) []statusDay {
	out := make([]statusDay, len(days))
	for i, d := range days {
		out[i] = statusDay{Day: d}
		ing := s.ingestion(project, d.Ingestion)
		if ing == nil {
			continue // a source since removed from the config
		}
		out[i].Schedule, out[i].Timezone = describeSchedule(ing.Schedule)
		if loc, err := ing.Schedule.Location(); err == nil {
			if start, err := parseDayStart(d.Date, loc); err == nil {
				out[i].UTCStart = start
			}
		}
	}
	return out
}

func describeSchedule(sc config.Schedule) (schedule, timezone string) {
	timezone = sc.Timezone
	if timezone == "" {
		timezone = config.DefaultTimezone
	}
	if sc.Mode == config.ScheduleAPITriggered {
		return config.ScheduleAPITriggered, timezone
	}
	return fmt.Sprintf("daily at %02d:00", sc.HourOrDefault()), timezone
}

// parseDayStart is the UTC instant the date's midnight falls on in loc.
func parseDayStart(date string, loc *time.Location) (string, error) {
	t, err := time.ParseInLocation(time.DateOnly, date, loc)
	if err != nil {
		return "", err
	}
	return t.UTC().Format(time.RFC3339), nil
}
