// Package deployments holds no Go code of its own: its test keeps the
// compose file, the Kubernetes manifests and the Grafana dashboard in step
// with what the sluice binary and the services actually accept and export.
package deployments

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/sluicehq/sluice/pkg/config"
	"github.com/sluicehq/sluice/schemas"
	"github.com/sluicehq/sluice/services/extractor"
)

const (
	composeDir    = "compose"
	kubernetesDir = "kubernetes"
	dashboardFile = "grafana/sluice-dashboard.json"
	// maxMemory is the memory limit every service is sized for.
	maxMemory = 256 << 20
)

// consumerGroups are the groups and topics of the services KEDA scales; the
// extractor's group depends on its selection (extractor.Config.GroupName).
// Each group name is also looked up in its service's source, so a rename
// there fails this test.
var consumerGroups = map[string]struct{ group, topic, source string }{
	"extractor": {"", schemas.TopicIngestRequests, "../services/extractor/extractor.go"},
	"mapper":    {"sluice-mapper", schemas.TopicRawRows, "../services/mapper/mapper.go"},
	"loader":    {"sluice-loader", schemas.TopicMappedEvents, "../services/loader/loader.go"},
}

func TestDeployments(t *testing.T) {
	c := loadCLI(t)
	metrics := exportedMetrics(t)
	t.Run("compose", func(t *testing.T) { reportProblems(t, checkCompose(c, composeDir)) })
	t.Run("kubernetes", func(t *testing.T) { reportProblems(t, checkKubernetes(c, kubernetesDir)) })
	t.Run("dashboard", func(t *testing.T) { reportProblems(t, checkDashboard(metrics, dashboardFile)) })
	t.Run("drift is caught", func(t *testing.T) { testDriftIsCaught(t, c, metrics) })
	t.Run("consumer groups in source", func(t *testing.T) {
		for target, g := range consumerGroups {
			if g.group == "" {
				continue
			}
			src, err := os.ReadFile(g.source)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Contains(src, []byte(strconv.Quote(g.group))) {
				t.Errorf("%s: consumer group %q no longer appears in %s", target, g.group, g.source)
			}
		}
	})
	t.Run("kubectl kustomize", func(t *testing.T) {
		kubectl, err := exec.LookPath("kubectl")
		if err != nil {
			t.Skip("kubectl not installed")
		}
		out, err := exec.Command(kubectl, "kustomize", kubernetesDir).CombinedOutput()
		if err != nil {
			t.Fatalf("kubectl kustomize: %v\n%s", err, out)
		}
		if !bytes.Contains(out, []byte("kind: ScaledObject")) || !bytes.Contains(out, []byte("name: sluice-config-")) {
			t.Errorf("kustomize output lacks the ScaledObjects or the generated ConfigMap:\n%s", out)
		}
	})
	t.Run("docker compose config", func(t *testing.T) {
		docker, err := exec.LookPath("docker")
		if err != nil {
			t.Skip("docker not installed")
		}
		if exec.Command(docker, "compose", "version").Run() != nil {
			t.Skip("docker compose plugin not installed")
		}
		cmd := exec.Command(docker, "compose", "--profile", "snowflake", "--profile", "bigquery", "config", "--quiet")
		cmd.Dir = composeDir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("docker compose config: %v\n%s", err, out)
		}
	})
}

// testDriftIsCaught changes one thing in a copy of the real files and
// expects the checks to name it.
func testDriftIsCaught(t *testing.T, c cli, metrics map[string]bool) {
	tests := []struct {
		name, dir, file, old, new, want string
	}{
		{"unknown flag", kubernetesDir, "extractor-snowflake.yaml", "--kinds=snowflake", "--kind=snowflake", "flag provided but not defined: -kind"},
		{"unknown verb", kubernetesDir, "mapper.yaml", "- run\n", "- serve\n", `unknown verb "serve"`},
		{"unknown target", kubernetesDir, "loader.yaml", "--target=loader", "--target=loaders", `unknown target "loaders"`},
		{"admin port drifts from container port", kubernetesDir, "mapper.yaml", "--admin-addr=0.0.0.0:9464", "--admin-addr=0.0.0.0:9000", "port 9000"},
		{"admin on loopback", kubernetesDir, "loader.yaml", "--admin-addr=0.0.0.0:9464", "--admin-addr=127.0.0.1:9464", "loopback"},
		{"liveness probe path", kubernetesDir, "planner.yaml", "path: /healthz", "path: /health", "liveness probe"},
		{"secret env missing", kubernetesDir, "extractor-postgres.yaml", "- name: ANALYTICS_PG_DSN", "- name: ANALYTICS_DSN", "ANALYTICS_PG_DSN"},
		{"secret file not mounted", kubernetesDir, "extractor-bigquery.yaml", "mountPath: /etc/sluice/secrets/bigquery", "mountPath: /etc/sluice/bigquery", "credentials_file"},
		{"config not mounted", kubernetesDir, "watcher.yaml", "--config=/etc/sluice/config/sluice.yaml", "--config=/etc/sluice.yaml", "not mounted"},
		{"keda group of another selection", kubernetesDir, "extractor-bigquery.yaml", "consumerGroup: sluice-extractor.kind=bigquery", "consumerGroup: sluice-extractor", `want "sluice-extractor.kind=bigquery"`},
		{"keda topic", kubernetesDir, "mapper.yaml", "topic: raw-rows", "topic: raw_rows", `want "raw-rows"`},
		{"memory over budget", kubernetesDir, "loader.yaml", "memory: 256Mi", "memory: 1Gi", "memory limit"},
		{"planner scaled out", kubernetesDir, "planner.yaml", "replicas: 1", "replicas: 3", "one replica"},
		{"compose trigger healthcheck port", composeDir, "compose.yaml", "http://127.0.0.1:8080/readyz", "http://127.0.0.1:8081/readyz", "want /readyz on port 8080"},
		{"compose healthcheck port", composeDir, "compose.yaml", `"--target=mapper", "--admin-addr=0.0.0.0:9464"`, `"--target=mapper", "--admin-addr=0.0.0.0:9465"`, "port 9465"},
		{"compose env file", composeDir, "demo.env", "WAREHOUSE_DSN=", "WAREHOUSE_URL=", "WAREHOUSE_DSN"},
		{"compose kind without extractor", composeDir, "compose.yaml", `"--kinds=bigquery"`, `"--kinds=snowflake"`, `connection "bigquery_prod"`},
		{"dashboard invented metric", "grafana", "sluice-dashboard.json", "sluice_loader_stage_seconds_bucket", "sluice_loader_commit_seconds_bucket", "sluice_loader_commit_seconds"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := copyDir(t, tt.dir)
			path := filepath.Join(dir, tt.file)
			data, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Contains(data, []byte(tt.old)) {
				t.Fatalf("%s does not contain %q: update the test", tt.file, tt.old)
			}
			if err := os.WriteFile(path, bytes.Replace(data, []byte(tt.old), []byte(tt.new), 1), 0o644); err != nil {
				t.Fatal(err)
			}
			var problems []string
			switch tt.dir {
			case composeDir:
				problems = checkCompose(c, dir)
			case kubernetesDir:
				problems = checkKubernetes(c, dir)
			default:
				problems = checkDashboard(metrics, path)
			}
			for _, p := range problems {
				if strings.Contains(p, tt.want) {
					return
				}
			}
			t.Errorf("changing %q to %q in %s: no problem mentions %q; got %q", tt.old, tt.new, tt.file, tt.want, problems)
		})
	}
}

func reportProblems(t testing.TB, problems []string) {
	t.Helper()
	for _, p := range problems {
		t.Error(p)
	}
}

func copyDir(t testing.TB, src string) string {
	t.Helper()
	dst := t.TempDir()
	err := filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, err := filepath.Rel(src, path)
		if err != nil {
			return err
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if err := os.MkdirAll(filepath.Join(dst, filepath.Dir(rel)), 0o755); err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), data, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	return dst
}

// cli is what the sluice binary accepts, read from its own --help output.
type cli struct {
	verbs    []string
	runFlags map[string]cliFlag
	targets  []string
}

type cliFlag struct {
	typ, def string // typ "" is a boolean
}

// loadCLI builds the sluice binary (once per test run: it is slow to link) and reads its verbs, `run` flags and
// target names from its help.
func loadCLI(t testing.TB) cli {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "sluice")
	build := exec.Command("go", "build", "-tags", "minicore_disabled", "-ldflags=-s -w", "-o", bin, "../services/sluice")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build sluice: %v\n%s", err, out)
	}
	top, err := exec.Command(bin, "--help").CombinedOutput()
	if err != nil {
		t.Fatalf("sluice --help: %v\n%s", err, top)
	}
	run, err := exec.Command(bin, "run", "--help").CombinedOutput()
	if err != nil {
		t.Fatalf("sluice run --help: %v\n%s", err, run)
	}
	c, err := parseHelp(string(top), string(run))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

var (
	verbLine    = regexp.MustCompile(`^  ([a-z][a-z-]*)\s+\S`)
	flagLine    = regexp.MustCompile(`^  -([a-z][a-z-]*)(?: (\w+))?$`)
	flagDefault = regexp.MustCompile(`\(default "?([^"]*?)"?\)$`)
	targetList  = regexp.MustCompile(`services to run: (.*), or all`)
)

func parseHelp(top, run string) (cli, error) {
	c := cli{runFlags: map[string]cliFlag{}}
	inCommands := false
	for _, line := range strings.Split(top, "\n") {
		switch {
		case strings.HasPrefix(line, "Commands:"):
			inCommands = true
		case inCommands && line == "":
			inCommands = false
		case inCommands:
			if m := verbLine.FindStringSubmatch(line); m != nil {
				c.verbs = append(c.verbs, m[1])
			}
		}
	}
	var last string
	for _, line := range strings.Split(run, "\n") {
		if m := flagLine.FindStringSubmatch(line); m != nil {
			last = m[1]
			c.runFlags[last] = cliFlag{typ: m[2]}
			continue
		}
		if last == "" {
			continue
		}
		if m := flagDefault.FindStringSubmatch(line); m != nil {
			f := c.runFlags[last]
			f.def = m[1]
			c.runFlags[last] = f
		}
		if last == "target" {
			if m := targetList.FindStringSubmatch(line); m != nil {
				c.targets = strings.Split(m[1], ", ")
			}
		}
	}
	if !slices.Contains(c.verbs, "run") || len(c.runFlags) == 0 || len(c.targets) == 0 {
		return c, fmt.Errorf("could not read verbs, run flags and targets from the help:\n%s\n%s", top, run)
	}
	for _, f := range []string{"config", "target", "admin-addr", "kinds", "connections"} {
		if _, ok := c.runFlags[f]; !ok {
			return c, fmt.Errorf("sluice run has no --%s flag any more; the checks here rely on it", f)
		}
	}
	return c, nil
}

// process is one container running sluice, from compose or Kubernetes.
type process struct {
	where         string
	args          []string
	env           map[string]bool
	mounts        []string          // container paths of mounted volumes
	files         map[string]string // container file -> file in the repository (configs)
	ports         map[int]bool
	ready         *probe
	live          *probe
	needsLiveness bool
}

type probe struct {
	path string
	port int
}

// invocation is a parsed `sluice run` command line.
type invocation struct {
	targets     []string
	connections []string
	kinds       []string
	config      *config.File
}

func (inv invocation) runs(target string) bool { return slices.Contains(inv.targets, target) }

// checkProcess returns what is wrong with p; inv is its parsed command
// line when the command line itself is sound.
func checkProcess(c cli, p process) (problems []string, inv *invocation) {
	bad := func(format string, args ...any) {
		problems = append(problems, p.where+": "+fmt.Sprintf(format, args...))
	}
	if len(p.args) == 0 {
		bad("no sluice arguments")
		return problems, nil
	}
	if !slices.Contains(c.verbs, p.args[0]) {
		bad("unknown verb %q: sluice has %s", p.args[0], strings.Join(c.verbs, ", "))
		return problems, nil
	}
	if p.args[0] != "run" {
		bad("services run `sluice run`, not %q", p.args[0])
		return problems, nil
	}
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	values := map[string]*string{}
	for name, f := range c.runFlags {
		if f.typ == "" {
			fs.Bool(name, f.def == "true", "")
		} else {
			values[name] = fs.String(name, f.def, "")
		}
	}
	if err := fs.Parse(p.args[1:]); err != nil {
		bad("%v", err)
		return problems, nil
	}
	if fs.NArg() > 0 {
		bad("unexpected arguments %q", fs.Args())
	}
	inv = &invocation{connections: splitList(*values["connections"]), kinds: splitList(*values["kinds"])}
	for _, tgt := range splitList(*values["target"]) {
		switch {
		case tgt == "all":
			inv.targets = append(inv.targets, c.targets...)
		case slices.Contains(c.targets, tgt):
			inv.targets = append(inv.targets, tgt)
		default:
			bad("unknown target %q: want %s or all", tgt, strings.Join(c.targets, ", "))
		}
	}
	if len(inv.targets) == 0 {
		return problems, nil
	}
	configPath := *values["config"]
	file, ok := p.files[configPath]
	if !ok {
		bad("--config %s is not mounted into the container", configPath)
		return problems, nil
	}
	cfg, err := config.Load(file)
	if err != nil {
		bad("%v", err)
		return problems, nil
	}
	inv.config = cfg

	// Where /healthz, /readyz and /metrics listen.
	addr, flagName := *values["admin-addr"], "--admin-addr"
	if inv.runs("trigger") {
		addr, flagName = cfg.HTTP.Addr, "http.addr of "+configPath
	}
	host, portText, err := net.SplitHostPort(addr)
	if err != nil {
		bad("%s %q: %v", flagName, addr, err)
		return problems, inv
	}
	port, _ := strconv.Atoi(portText)
	if ip := net.ParseIP(host); host == "localhost" || (ip != nil && ip.IsLoopback()) {
		bad("%s %s listens on loopback: probes and Prometheus cannot reach it", flagName, addr)
	}
	if !p.ports[port] {
		bad("%s is port %d but the container declares ports %v", flagName, port, sortedPorts(p.ports))
	}
	switch {
	case p.ready == nil:
		bad("no readiness probe (or healthcheck) on /readyz")
	case p.ready.path != "/readyz" || p.ready.port != port:
		bad("readiness probe is %s on port %d, want /readyz on port %d (%s)", p.ready.path, p.ready.port, port, flagName)
	}
	if p.needsLiveness {
		switch {
		case p.live == nil:
			bad("no liveness probe on /healthz")
		case p.live.path != "/healthz" || p.live.port != port:
			bad("liveness probe is %s on port %d, want /healthz on port %d (%s)", p.live.path, p.live.port, port, flagName)
		}
	}

	env, files := needs(cfg, *inv)
	for _, n := range env {
		if !p.env[n.name] {
			bad("%s names environment variable %s, which the container does not get", n.field, n.name)
		}
	}
	for _, n := range files {
		if !slices.ContainsFunc(p.mounts, func(m string) bool { return n.name == m || strings.HasPrefix(n.name, strings.TrimSuffix(m, "/")+"/") }) {
			bad("%s %s is not under any mounted volume %v", n.field, n.name, p.mounts)
		}
	}
	return problems, inv
}

type need struct{ field, name string }

// needs lists the environment variables and files a process running inv
// reads: every process opens the store and Redis; the planner, the watcher
// and the extractor open the warehouses (an extractor only those it serves).
func needs(cfg *config.File, inv invocation) (env, files []need) {
	addEnv := func(field, name string) {
		if name != "" {
			env = append(env, need{field, name})
		}
	}
	addFile := func(field, name string) {
		if name != "" {
			files = append(files, need{field, name})
		}
	}
	addEnv("store.dsn_env", cfg.Store.DSNEnv)
	addEnv("redis.password_env", cfg.Redis.PasswordEnv)
	warehouses := inv.runs("planner") || inv.runs("watcher")
	for i, conn := range cfg.Connections {
		if !warehouses && !(inv.runs("extractor") && serves(inv, conn)) {
			continue
		}
		field := fmt.Sprintf("connections[%d] (%s)", i, conn.Name)
		addEnv(field+".dsn_env", conn.DSNEnv)
		addEnv(field+".password_env", conn.PasswordEnv)
		addEnv(field+".private_key_passphrase_env", conn.PrivateKeyPassphraseEnv)
		addFile(field+".private_key_file", conn.PrivateKeyFile)
		addFile(field+".credentials_file", conn.CredentialsFile)
	}
	return env, files
}

// serves mirrors the extractor's selection by --connections and --kinds.
func serves(inv invocation, conn config.Connection) bool {
	return (len(inv.connections) == 0 || slices.Contains(inv.connections, conn.Name)) &&
		(len(inv.kinds) == 0 || slices.Contains(inv.kinds, conn.Kind))
}

// checkCoverage: every connection of the config has an extractor.
func checkCoverage(where string, invs []*invocation) []string {
	var problems []string
	seen := map[string]bool{}
	for _, inv := range invs {
		if inv == nil || inv.config == nil {
			continue
		}
		for _, conn := range inv.config.Connections {
			if seen[conn.Name] {
				continue
			}
			seen[conn.Name] = true
			if !slices.ContainsFunc(invs, func(o *invocation) bool { return o != nil && o.runs("extractor") && serves(*o, conn) }) {
				problems = append(problems, fmt.Sprintf("%s: connection %q (%s) has no extractor serving it", where, conn.Name, conn.Kind))
			}
		}
	}
	return problems
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

func sortedPorts(ports map[int]bool) []int {
	var out []int
	for p := range ports {
		out = append(out, p)
	}
	slices.Sort(out)
	return out
}

// --- compose ------------------------------------------------------------

type composeFile struct {
	Services map[string]composeService `yaml:"services"`
}

type composeService struct {
	Image       string            `yaml:"image"`
	Entrypoint  []string          `yaml:"entrypoint"`
	Command     []string          `yaml:"command"`
	Profiles    []string          `yaml:"profiles"`
	Environment map[string]string `yaml:"environment"`
	EnvFile     []composeEnvFile  `yaml:"env_file"`
	Volumes     []string          `yaml:"volumes"`
	Expose      []string          `yaml:"expose"`
	Ports       []string          `yaml:"ports"`
	Healthcheck struct {
		Test []string `yaml:"test"`
	} `yaml:"healthcheck"`
}

type composeEnvFile struct {
	Path     string `yaml:"path"`
	Required *bool  `yaml:"required"`
}

// checkCompose checks every sluice service of dir/compose.yaml.
func checkCompose(c cli, dir string) []string {
	data, err := os.ReadFile(filepath.Join(dir, "compose.yaml"))
	if err != nil {
		return []string{err.Error()}
	}
	var f composeFile
	if err := yaml.Unmarshal(data, &f); err != nil {
		return []string{"compose.yaml: " + err.Error()}
	}
	var problems []string
	var invs []*invocation
	found := 0
	for name, s := range f.Services {
		if !strings.Contains(s.Image, "sluice") {
			continue
		}
		found++
		p, errs := composeProcess(dir, name, s)
		problems = append(problems, errs...)
		if len(s.Entrypoint) > 0 {
			problems = append(problems, p.where+": overrides the image's sluice entrypoint")
		}
		probs, inv := checkProcess(c, p)
		problems = append(problems, probs...)
		invs = append(invs, inv)
	}
	if found == 0 {
		problems = append(problems, "compose.yaml: no sluice services")
	}
	return append(problems, checkCoverage("compose.yaml", invs)...)
}

func composeProcess(dir, name string, s composeService) (process, []string) {
	p := process{where: "compose service " + name, args: s.Command, env: map[string]bool{}, files: map[string]string{}, ports: map[int]bool{}}
	var problems []string
	for k := range s.Environment {
		p.env[k] = true
	}
	for _, ef := range s.EnvFile {
		path := filepath.Join(dir, ef.Path)
		if ef.Required != nil && !*ef.Required {
			// An optional file holds the operator's secrets; its committed
			// example lists what it may hold.
			path += ".example"
		}
		keys, err := envFileKeys(path)
		if err != nil {
			problems = append(problems, p.where+": "+err.Error())
		}
		for _, k := range keys {
			p.env[k] = true
		}
	}
	for _, v := range s.Volumes {
		parts := strings.Split(v, ":")
		if len(parts) < 2 {
			continue
		}
		src, dst := parts[0], parts[1]
		p.mounts = append(p.mounts, dst)
		if strings.HasPrefix(src, ".") {
			host := filepath.Join(dir, src)
			if st, err := os.Stat(host); err == nil && !st.IsDir() {
				p.files[dst] = host
			}
		}
	}
	for _, e := range s.Expose {
		if n, err := strconv.Atoi(e); err == nil {
			p.ports[n] = true
		}
	}
	for _, e := range s.Ports {
		parts := strings.Split(e, ":")
		if n, err := strconv.Atoi(parts[len(parts)-1]); err == nil {
			p.ports[n] = true
		}
	}
	for _, arg := range s.Healthcheck.Test {
		if u, err := url.Parse(arg); err == nil && u.Scheme == "http" {
			port, _ := strconv.Atoi(u.Port())
			p.ready = &probe{path: u.Path, port: port}
		}
	}
	return p, problems
}

func envFileKeys(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("env file: %w", err)
	}
	defer f.Close()
	var keys []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if k, _, ok := strings.Cut(line, "="); ok {
			keys = append(keys, strings.TrimSpace(k))
		}
	}
	return keys, sc.Err()
}

// --- kubernetes -----------------------------------------------------------

type kustomization struct {
	Resources          []string `yaml:"resources"`
	ConfigMapGenerator []struct {
		Name  string   `yaml:"name"`
		Files []string `yaml:"files"`
	} `yaml:"configMapGenerator"`
}

type object struct {
	Kind     string `yaml:"kind"`
	Metadata struct {
		Name string `yaml:"name"`
	} `yaml:"metadata"`
	Spec       yaml.Node         `yaml:"spec"`
	Data       map[string]string `yaml:"data"`
	StringData map[string]string `yaml:"stringData"`
}

type deploymentSpec struct {
	Replicas *int `yaml:"replicas"`
	Template struct {
		Spec struct {
			Containers []container `yaml:"containers"`
			Volumes    []struct {
				Name      string `yaml:"name"`
				ConfigMap *struct {
					Name string `yaml:"name"`
				} `yaml:"configMap"`
			} `yaml:"volumes"`
		} `yaml:"spec"`
	} `yaml:"template"`
}

type container struct {
	Image   string   `yaml:"image"`
	Command []string `yaml:"command"`
	Args    []string `yaml:"args"`
	Ports   []struct {
		Name          string `yaml:"name"`
		ContainerPort int    `yaml:"containerPort"`
	} `yaml:"ports"`
	Env []struct {
		Name      string `yaml:"name"`
		Value     string `yaml:"value"`
		ValueFrom *struct {
			SecretKeyRef *struct {
				Name string `yaml:"name"`
				Key  string `yaml:"key"`
			} `yaml:"secretKeyRef"`
		} `yaml:"valueFrom"`
	} `yaml:"env"`
	ReadinessProbe *probeSpec `yaml:"readinessProbe"`
	LivenessProbe  *probeSpec `yaml:"livenessProbe"`
	VolumeMounts   []struct {
		Name      string `yaml:"name"`
		MountPath string `yaml:"mountPath"`
	} `yaml:"volumeMounts"`
	Resources struct {
		Limits map[string]string `yaml:"limits"`
	} `yaml:"resources"`
}

type probeSpec struct {
	HTTPGet *struct {
		Path string `yaml:"path"`
		Port string `yaml:"port"` // a number or a port name
	} `yaml:"httpGet"`
}

type scaledObjectSpec struct {
	ScaleTargetRef struct {
		Name string `yaml:"name"`
	} `yaml:"scaleTargetRef"`
	MaxReplicaCount int `yaml:"maxReplicaCount"`
	Triggers        []struct {
		Type     string            `yaml:"type"`
		Metadata map[string]string `yaml:"metadata"`
	} `yaml:"triggers"`
}

type pdbSpec struct {
	Selector struct {
		MatchLabels map[string]string `yaml:"matchLabels"`
	} `yaml:"selector"`
}

// checkKubernetes checks the resources of dir/kustomization.yaml.
func checkKubernetes(c cli, dir string) []string {
	var problems []string
	bad := func(format string, args ...any) { problems = append(problems, fmt.Sprintf(format, args...)) }
	data, err := os.ReadFile(filepath.Join(dir, "kustomization.yaml"))
	if err != nil {
		return []string{err.Error()}
	}
	var k kustomization
	if err := yaml.Unmarshal(data, &k); err != nil {
		return []string{"kustomization.yaml: " + err.Error()}
	}
	configMaps := map[string]map[string]string{} // name -> key -> file
	for _, g := range k.ConfigMapGenerator {
		configMaps[g.Name] = map[string]string{}
		for _, f := range g.Files {
			configMaps[g.Name][filepath.Base(f)] = filepath.Join(dir, f)
		}
	}
	var objects []object
	for _, r := range k.Resources {
		docs, err := readDocs(filepath.Join(dir, r))
		if err != nil {
			bad("%s: %v", r, err)
			continue
		}
		objects = append(objects, docs...)
	}
	secrets := map[string]map[string]bool{}
	for _, o := range objects {
		if o.Kind == "Secret" {
			secrets[o.Metadata.Name] = map[string]bool{}
			for key := range o.Data {
				secrets[o.Metadata.Name][key] = true
			}
			for key := range o.StringData {
				secrets[o.Metadata.Name][key] = true
			}
		}
	}

	deployments := map[string]*invocation{}
	pdbs := map[string]bool{}
	var invs []*invocation
	for _, o := range objects {
		where := o.Kind + " " + o.Metadata.Name
		switch o.Kind {
		case "Deployment":
			var spec deploymentSpec
			if err := o.Spec.Decode(&spec); err != nil {
				bad("%s: %v", where, err)
				continue
			}
			for _, ctr := range spec.Template.Spec.Containers {
				if !strings.Contains(ctr.Image, "sluice") {
					continue
				}
				p, errs := kubeProcess(where, spec, ctr, configMaps, secrets)
				problems = append(problems, errs...)
				if len(ctr.Command) > 0 {
					bad("%s: overrides the image's sluice entrypoint", where)
				}
				probs, inv := checkProcess(c, p)
				problems = append(problems, probs...)
				invs = append(invs, inv)
				deployments[o.Metadata.Name] = inv
				if inv != nil && (inv.runs("planner") || inv.runs("watcher")) && (spec.Replicas == nil || *spec.Replicas != 1) {
					bad("%s: the planner and the watcher run one replica (their Redis leases make more safe but useless)", where)
				}
			}
		case "PodDisruptionBudget":
			var spec pdbSpec
			if err := o.Spec.Decode(&spec); err != nil {
				bad("%s: %v", where, err)
			}
			pdbs["sluice-"+spec.Selector.MatchLabels["app.kubernetes.io/component"]] = true
		}
	}
	if len(deployments) == 0 {
		bad("kubernetes: no sluice Deployments")
	}
	scaled := map[string]bool{}
	for _, o := range objects {
		if o.Kind != "ScaledObject" {
			continue
		}
		var spec scaledObjectSpec
		if err := o.Spec.Decode(&spec); err != nil {
			bad("ScaledObject %s: %v", o.Metadata.Name, err)
			continue
		}
		target := spec.ScaleTargetRef.Name
		scaled[target] = true
		problems = append(problems, checkScaledObject("ScaledObject "+o.Metadata.Name, spec, deployments[target])...)
	}
	for name, inv := range deployments {
		if !pdbs[name] {
			bad("Deployment %s: no PodDisruptionBudget selects it", name)
		}
		if inv == nil {
			continue
		}
		for target := range consumerGroups {
			if inv.runs(target) && !scaled[name] {
				bad("Deployment %s: runs the %s but no ScaledObject scales it on consumer lag", name, target)
			}
		}
	}
	return append(problems, checkCoverage("kubernetes", invs)...)
}

func readDocs(path string) ([]object, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var out []object
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for {
		var o object
		if err := dec.Decode(&o); err != nil {
			if errors.Is(err, io.EOF) {
				return out, nil
			}
			return nil, err
		}
		if o.Kind == "" {
			return nil, errors.New("a document without kind")
		}
		out = append(out, o)
	}
}

func kubeProcess(where string, spec deploymentSpec, ctr container, configMaps map[string]map[string]string, secrets map[string]map[string]bool) (process, []string) {
	var problems []string
	p := process{where: where, args: ctr.Args, env: map[string]bool{}, files: map[string]string{}, ports: map[int]bool{}, needsLiveness: true}
	named := map[string]int{}
	for _, port := range ctr.Ports {
		p.ports[port.ContainerPort] = true
		named[port.Name] = port.ContainerPort
	}
	for _, e := range ctr.Env {
		p.env[e.Name] = true
		if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
			ref := e.ValueFrom.SecretKeyRef
			if !secrets[ref.Name][ref.Key] {
				problems = append(problems, fmt.Sprintf("%s: env %s comes from secret %s key %s, which the manifests do not define", where, e.Name, ref.Name, ref.Key))
			}
		} else if e.Value == "" {
			problems = append(problems, fmt.Sprintf("%s: env %s has neither a value nor a secretKeyRef", where, e.Name))
		}
	}
	volumes := map[string]string{} // volume -> config map
	for _, v := range spec.Template.Spec.Volumes {
		if v.ConfigMap != nil {
			volumes[v.Name] = v.ConfigMap.Name
		}
	}
	for _, m := range ctr.VolumeMounts {
		p.mounts = append(p.mounts, m.MountPath)
		for key, file := range configMaps[volumes[m.Name]] {
			p.files[m.MountPath+"/"+key] = file
		}
	}
	toProbe := func(ps *probeSpec) *probe {
		if ps == nil || ps.HTTPGet == nil {
			return nil
		}
		port, err := strconv.Atoi(ps.HTTPGet.Port)
		if err != nil {
			port = named[ps.HTTPGet.Port]
		}
		return &probe{path: ps.HTTPGet.Path, port: port}
	}
	p.ready, p.live = toProbe(ctr.ReadinessProbe), toProbe(ctr.LivenessProbe)
	if n, err := parseQuantity(ctr.Resources.Limits["memory"]); err != nil || n > maxMemory {
		problems = append(problems, fmt.Sprintf("%s: memory limit %q: want at most 256Mi", where, ctr.Resources.Limits["memory"]))
	}
	return p, problems
}

// parseQuantity reads the binary-suffixed memory quantities used here.
func parseQuantity(q string) (int64, error) {
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"Ki", 1 << 10}, {"Mi", 1 << 20}, {"Gi", 1 << 30}} {
		if n, ok := strings.CutSuffix(q, u.suffix); ok {
			v, err := strconv.ParseInt(n, 10, 64)
			return v * u.mult, err
		}
	}
	return strconv.ParseInt(q, 10, 64)
}

func checkScaledObject(where string, spec scaledObjectSpec, inv *invocation) []string {
	var problems []string
	bad := func(format string, args ...any) { problems = append(problems, where+": "+fmt.Sprintf(format, args...)) }
	if inv == nil || inv.config == nil {
		bad("scales %q, which is not a sound sluice Deployment", spec.ScaleTargetRef.Name)
		return problems
	}
	var wantGroup, wantTopic string
	n := 0
	for target, g := range consumerGroups {
		if !inv.runs(target) {
			continue
		}
		n++
		wantGroup, wantTopic = g.group, inv.config.Kafka.TopicPrefix+g.topic
		if target == "extractor" {
			wantGroup = extractor.Config{Connections: inv.connections, Kinds: inv.kinds}.GroupName()
		}
	}
	if n != 1 {
		bad("scales a Deployment running %v: scale one consumer (extractor, mapper or loader) per Deployment", inv.targets)
		return problems
	}
	if spec.MaxReplicaCount > int(inv.config.Kafka.Partitions) {
		bad("maxReplicaCount %d is more than the %d partitions: the extra consumers would idle", spec.MaxReplicaCount, inv.config.Kafka.Partitions)
	}
	kafkaTriggers := 0
	for _, tr := range spec.Triggers {
		if tr.Type != "kafka" {
			continue
		}
		kafkaTriggers++
		m := tr.Metadata
		if m["consumerGroup"] != wantGroup {
			bad("consumerGroup %q, want %q", m["consumerGroup"], wantGroup)
		}
		if m["topic"] != wantTopic {
			bad("topic %q, want %q", m["topic"], wantTopic)
		}
		if want := strings.Join(inv.config.Kafka.Brokers, ","); m["bootstrapServers"] != want {
			bad("bootstrapServers %q, want the config's brokers %q", m["bootstrapServers"], want)
		}
		if _, err := strconv.Atoi(m["lagThreshold"]); err != nil {
			bad("lagThreshold %q is not a number", m["lagThreshold"])
		}
	}
	if kafkaTriggers == 0 {
		bad("no kafka trigger")
	}
	return problems
}

// --- dashboard ------------------------------------------------------------

var (
	quotedMetric = regexp.MustCompile(`"(sluice_[a-z0-9_]+)"`)
	nsSubName    = regexp.MustCompile(`Namespace:\s*"(\w+)",\s*Subsystem:\s*"(\w+)",\s*Name:\s*"(\w+)"`)
	kpromNS      = regexp.MustCompile(`kprom\.NewMetrics\("(\w+)"`)
	kpromName    = regexp.MustCompile(`Name\s*[:=]\s*"([a-z0-9_]+)"`)
	exprMetric   = regexp.MustCompile(`\b((?:sluice|go|process)_[a-z0-9_]+)`)
)

// exportedMetrics collects the metric names the Go source registers: literal
// names, Namespace/Subsystem/Name triples, and franz-go's kprom metrics
// under the namespace pkg/kafka gives them.
func exportedMetrics(t testing.TB) map[string]bool {
	t.Helper()
	names := map[string]bool{}
	var namespaces []string
	for _, root := range []string{"../services", "../pkg"} {
		err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
				return err
			}
			src, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			for _, m := range quotedMetric.FindAllSubmatch(src, -1) {
				names[string(m[1])] = true
			}
			for _, m := range nsSubName.FindAllSubmatch(src, -1) {
				names[string(m[1])+"_"+string(m[2])+"_"+string(m[3])] = true
			}
			for _, m := range kpromNS.FindAllSubmatch(src, -1) {
				namespaces = append(namespaces, string(m[1]))
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if len(namespaces) > 0 {
		out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/twmb/franz-go/plugin/kprom").Output()
		if err != nil {
			t.Fatalf("locate kprom: %v", err)
		}
		src, err := os.ReadFile(filepath.Join(strings.TrimSpace(string(out)), "kprom.go"))
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range kpromName.FindAllSubmatch(src, -1) {
			for _, ns := range namespaces {
				names[ns+"_"+string(m[1])] = true
			}
		}
	}
	if len(names) < 10 {
		t.Fatalf("found only %d metric names in the source: the patterns here no longer match how metrics are declared", len(names))
	}
	return names
}

type dashboard struct {
	Panels []panel `json:"panels"`
}

type panel struct {
	Title   string `json:"title"`
	Targets []struct {
		Expr string `json:"expr"`
	} `json:"targets"`
	Panels []panel `json:"panels"`
}

// checkDashboard: the dashboard parses and queries only metrics the code
// exports (go_* and process_* come from the collectors every process
// registers).
func checkDashboard(metrics map[string]bool, path string) []string {
	data, err := os.ReadFile(path)
	if err != nil {
		return []string{err.Error()}
	}
	var d dashboard
	if err := json.Unmarshal(data, &d); err != nil {
		return []string{path + ": " + err.Error()}
	}
	var problems []string
	queries := 0
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			walk(p.Panels)
			for _, tg := range p.Targets {
				queries++
				for _, m := range exprMetric.FindAllString(tg.Expr, -1) {
					if strings.HasPrefix(m, "go_") || strings.HasPrefix(m, "process_") || metrics[m] {
						continue
					}
					base := m
					for _, suffix := range []string{"_bucket", "_sum", "_count"} {
						base = strings.TrimSuffix(base, suffix)
					}
					if !metrics[base] {
						problems = append(problems, fmt.Sprintf("%s: panel %q queries %s, which no service exports", path, p.Title, base))
					}
				}
			}
		}
	}
	walk(d.Panels)
	if queries == 0 {
		problems = append(problems, path+": no queries")
	}
	return problems
}
