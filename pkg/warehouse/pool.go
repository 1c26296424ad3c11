package warehouse

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/sluicehq/sluice/pkg/config"
	"github.com/sluicehq/sluice/pkg/vocab"
)

// Opener opens a Source for one connection of its kind.
type Opener func(ctx context.Context, conn config.Connection) (Source, error)

// Pool opens each connection's Source on first use and shares it. main
// decides which kinds exist by the openers it passes.
type Pool struct {
	openers map[string]Opener
	conns   map[string]config.Connection

	mu   sync.Mutex
	open map[string]Source
}

// NewPool serves conns with openers keyed by connection kind.
func NewPool(conns []config.Connection, openers map[string]Opener) *Pool {
	p := &Pool{openers: openers, conns: map[string]config.Connection{}, open: map[string]Source{}}
	for _, c := range conns {
		p.conns[c.Name] = c
	}
	return p
}

// ErrUnknownConnection is returned for a connection the config lacks.
var ErrUnknownConnection = errors.New("unknown connection")

// Connection returns the named connection's config.
func (p *Pool) Connection(name string) (config.Connection, bool) {
	c, ok := p.conns[name]
	return c, ok
}

// Source returns the named connection's Source, opening it if needed.
func (p *Pool) Source(ctx context.Context, name string) (Source, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if s, ok := p.open[name]; ok {
		return s, nil
	}
	conn, ok := p.conns[name]
	if !ok {
		return nil, fmt.Errorf("connection %q: %w", name, ErrUnknownConnection)
	}
	open, ok := p.openers[conn.Kind]
	if !ok {
		return nil, &Error{Category: vocab.CategoryConfig, Err: fmt.Errorf("connection %q: kind %q is not built into this binary", name, conn.Kind)}
	}
	s, err := open(ctx, conn)
	if err != nil {
		return nil, fmt.Errorf("open connection %q: %w", name, err)
	}
	p.open[name] = s
	return s, nil
}

// Close closes every opened Source.
func (p *Pool) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	var errs []error
	for name, s := range p.open {
		if err := s.Close(); err != nil {
			errs = append(errs, fmt.Errorf("close connection %q: %w", name, err))
		}
	}
	p.open = map[string]Source{}
	return errors.Join(errs...)
}
