package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"
)

// proc is one supervised process: like a container under an orchestrator,
// it is restarted whenever it exits until the suite stops it. Kill sends
// SIGKILL to the process the suite started (by its pid) and lets the
// supervisor bring it back.
type proc struct {
	name    string
	bin     string
	args    []string
	env     []string
	logPath string
	// restartDelay is the pause before a restart, as an orchestrator's
	// back-off would give.
	restartDelay time.Duration

	mu       sync.Mutex
	cmd      *exec.Cmd
	stopped  bool
	starts   int
	kills    int
	crashes  int // exits the suite did not cause
	wantKill bool
	done     chan struct{}
}

// supervise runs p until ctx is cancelled or stop is called.
func (p *proc) supervise(ctx context.Context) {
	p.done = make(chan struct{})
	go func() {
		defer close(p.done)
		for {
			p.mu.Lock()
			if p.stopped || ctx.Err() != nil {
				p.mu.Unlock()
				return
			}
			cmd, err := p.startLocked()
			p.mu.Unlock()
			if err == nil {
				err = cmd.Wait()
			}
			p.mu.Lock()
			if !p.wantKill && !p.stopped && ctx.Err() == nil {
				p.crashes++
				logf("%s exited on its own (%v); restarting", p.name, err)
			}
			p.wantKill = false
			p.cmd = nil
			p.mu.Unlock()
			select {
			case <-ctx.Done():
				return
			case <-time.After(p.restartDelay):
			}
		}
	}()
}

func (p *proc) startLocked() (*exec.Cmd, error) {
	f, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fmt.Fprintf(f, "\n=== chaos: start %d of %s at %s\n", p.starts+1, p.name, time.Now().Format(time.RFC3339Nano))
	cmd := exec.Command(p.bin, p.args...)
	cmd.Env = append(os.Environ(), p.env...)
	cmd.Stdout, cmd.Stderr = f, f
	// Its own process group: a Ctrl-C of the suite reaches the suite,
	// which then stops its children itself.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", p.name, err)
	}
	p.cmd = cmd
	p.starts++
	return cmd, nil
}

// kill sends SIGKILL to the running process, if any; the supervisor
// restarts it.
func (p *proc) kill() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || p.cmd.Process == nil {
		return false
	}
	p.wantKill = true
	p.kills++
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	return true
}

// stop ends supervision: SIGTERM, then SIGKILL after grace.
func (p *proc) stop(grace time.Duration) {
	p.mu.Lock()
	p.stopped = true
	cmd := p.cmd
	p.mu.Unlock()
	if cmd != nil && cmd.Process != nil {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		t := time.AfterFunc(grace, func() { _ = cmd.Process.Signal(syscall.SIGKILL) })
		defer t.Stop()
	}
	if p.done != nil {
		<-p.done
	}
}

func (p *proc) counts() (starts, kills, crashes int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.starts, p.kills, p.crashes
}

// freePort returns a port nothing listens on right now.
func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// waitPort waits until addr accepts connections.
func waitPort(ctx context.Context, addr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s did not accept connections within %s: %w", addr, timeout, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// pid is the running process's pid, 0 when none runs.
func (p *proc) pid() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil || p.cmd.Process == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// resume supervises p again after stop.
func (p *proc) resume(ctx context.Context) {
	p.mu.Lock()
	p.stopped = false
	p.mu.Unlock()
	p.supervise(ctx)
}

// terminate ends supervision with SIGTERM and reports how long the
// process took to exit on its own; after limit it is SIGKILLed (killed
// true). A process that was not running reports zero.
func (p *proc) terminate(limit time.Duration) (took time.Duration, killed bool, err error) {
	p.mu.Lock()
	p.stopped = true
	cmd := p.cmd
	p.mu.Unlock()
	if cmd == nil || cmd.Process == nil {
		<-p.done
		return 0, false, nil
	}
	start := time.Now()
	_ = cmd.Process.Signal(syscall.SIGTERM)
	t := time.AfterFunc(limit, func() {
		p.mu.Lock()
		killed = true
		p.mu.Unlock()
		_ = cmd.Process.Signal(syscall.SIGKILL)
	})
	<-p.done
	t.Stop()
	took = time.Since(start)
	p.mu.Lock()
	defer p.mu.Unlock()
	if cmd.ProcessState != nil && !cmd.ProcessState.Success() && !killed {
		err = fmt.Errorf("%s exited with %s", p.name, cmd.ProcessState)
	}
	return took, killed, err
}
