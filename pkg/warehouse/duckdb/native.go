package duckdb

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"sync"
	"time"

	bindings "github.com/duckdb/duckdb-go-bindings"
	duckdb "github.com/duckdb/duckdb-go/v2"
)

// duckdb-go's database/sql driver executes non-streaming: DuckDB
// materializes a whole result before the first row, so reading a day
// through it holds the day in memory. Streams therefore read through the C
// API (duckdb-go-bindings) with a streaming pending result, on the same
// database instance the driver uses: duckdb-go opens files through an
// exported instance cache, and asking that cache for the same path returns
// the same instance (one lock on the file, one buffer pool).

// openNative returns a reference to the database instance sql.Open(dsn)
// uses. The config must match the driver's (duckdb_api=go plus the DSN's
// options): the cache refuses an instance with a different configuration.
func openNative(dsn string) (bindings.Database, error) {
	path, rawQuery, _ := strings.Cut(dsn, "?")
	options, err := url.ParseQuery(rawQuery)
	if err != nil {
		return bindings.Database{}, fmt.Errorf("parse DSN options: %w", err)
	}
	var config bindings.Config
	defer bindings.DestroyConfig(&config)
	if bindings.CreateConfig(&config) == bindings.StateError {
		return bindings.Database{}, errors.New("create config")
	}
	if bindings.SetConfig(config, "duckdb_api", "go") == bindings.StateError {
		return bindings.Database{}, errors.New("set config duckdb_api=go")
	}
	for k, v := range options {
		if len(v) > 0 && bindings.SetConfig(config, k, v[0]) == bindings.StateError {
			return bindings.Database{}, fmt.Errorf("set config %s=%s", k, v[0])
		}
	}
	var db bindings.Database
	var msg string
	if bindings.GetOrCreateFromCache(duckdb.GetInstanceCache(), path, &db, config, &msg) == bindings.StateError {
		bindings.Close(&db)
		return bindings.Database{}, errorFromMessage(msg)
	}
	return db, nil
}

// streamingQuery is one query executing on its own connection with a
// streaming result: DuckDB produces chunks as they are fetched.
type streamingQuery struct {
	conn    bindings.Connection
	stmt    bindings.PreparedStatement
	pending bindings.PendingResult
	res     bindings.Result // zero until executed; DestroyResult ignores it then
	stop    func()          // stops the interrupter; before the connection closes
}

// interruptEvery re-asserts an interrupt while a cancelled query still
// runs, as duckdb-go does: DuckDB can clear the flag between tasks.
const interruptEvery = 100 * time.Millisecond

// startStreaming connects, prepares sqlText, binds args as VARCHAR
// parameters and starts a streaming execution. The caller must close the
// query, on every path, once it is non-nil.
func startStreaming(ctx context.Context, db bindings.Database, sqlText string, args ...string) (*streamingQuery, error) {
	q := &streamingQuery{stop: func() {}}
	if bindings.Connect(db, &q.conn) == bindings.StateError {
		bindings.Disconnect(&q.conn)
		return nil, &duckdb.Error{Type: duckdb.ErrorTypeConnection, Msg: "Connection Error: connect to the database"}
	}
	q.stop = interruptOnDone(ctx, q.conn)
	if err := q.start(ctx, sqlText, args); err != nil {
		q.close()
		return nil, err
	}
	return q, nil
}

func (q *streamingQuery) start(ctx context.Context, sqlText string, args []string) error {
	if bindings.Prepare(q.conn, sqlText, &q.stmt) == bindings.StateError {
		return errorFromMessage(bindings.PrepareError(q.stmt))
	}
	// Bind by position, leaving extra args unused, as duckdb-go does.
	params := int(bindings.NParams(q.stmt))
	if params > len(args) {
		return fmt.Errorf("incorrect argument count for command: have %d want %d", len(args), params)
	}
	for i, a := range args[:params] {
		if bindings.BindVarchar(q.stmt, bindings.IdxT(i+1), a) == bindings.StateError {
			return errorFromMessage(bindings.PrepareError(q.stmt))
		}
	}
	if bindings.PendingPreparedStreaming(q.stmt, &q.pending) == bindings.StateError {
		return errorFromMessage(bindings.PendingError(q.pending))
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if bindings.ExecutePending(q.pending, &q.res) == bindings.StateError {
		return q.resultError(ctx)
	}
	return nil
}

// columnTypes returns the result's column types.
func (q *streamingQuery) columnTypes() []bindings.Type {
	types := make([]bindings.Type, bindings.ColumnCount(&q.res))
	for i := range types {
		types[i] = bindings.ColumnType(&q.res, bindings.IdxT(i))
	}
	return types
}

// next fetches the next chunk: ok false at the end of the result. The
// chunk must be destroyed by the caller.
func (q *streamingQuery) next(ctx context.Context) (chunk bindings.DataChunk, ok bool, err error) {
	chunk = bindings.FetchChunk(q.res)
	if chunk.Ptr != nil {
		return chunk, true, nil
	}
	// No chunk: the end of the result, or an error (an interrupt included).
	if bindings.ResultError(&q.res) != "" {
		return chunk, false, q.resultError(ctx)
	}
	return chunk, false, ctx.Err()
}

// resultError is the result's error; a cancelled context wins over the
// interrupt it caused.
func (q *streamingQuery) resultError(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	return &duckdb.Error{Type: duckdb.ErrorType(bindings.ResultErrorType(&q.res)), Msg: bindings.ResultError(&q.res)}
}

// close releases every native handle, the result first and the connection
// last, after the interrupter has stopped touching it.
func (q *streamingQuery) close() {
	bindings.DestroyResult(&q.res)
	bindings.DestroyPending(&q.pending)
	bindings.DestroyPrepare(&q.stmt)
	q.stop()
	bindings.Disconnect(&q.conn)
}

// interruptOnDone interrupts conn's running query once ctx is done, and
// again every interruptEvery until stopped. The returned stop waits for
// the goroutine, so no interrupt reaches a closed connection.
func interruptOnDone(ctx context.Context, conn bindings.Connection) (stop func()) {
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		select {
		case <-done:
			return
		case <-ctx.Done():
		}
		ticker := time.NewTicker(interruptEvery)
		defer ticker.Stop()
		for {
			bindings.Interrupt(conn)
			select {
			case <-done:
				return
			case <-ticker.C:
			}
		}
	}()
	var once sync.Once
	return func() {
		once.Do(func() { close(done) })
		wg.Wait()
	}
}

// errorFromMessage types an error DuckDB gave only as text, as duckdb-go
// does: the message starts with "<type> Error: ".
func errorFromMessage(msg string) error {
	t := duckdb.ErrorTypeInvalid
	if prefix, _, ok := strings.Cut(msg, ": "); ok {
		if typ, ok := errorPrefixes[prefix]; ok {
			t = typ
		}
	}
	return &duckdb.Error{Type: t, Msg: msg}
}

// errorPrefixes mirrors duckdb-go's (unexported) errorPrefixMap.
var errorPrefixes = map[string]duckdb.ErrorType{
	"Invalid Error":                duckdb.ErrorTypeInvalid,
	"Out of Range Error":           duckdb.ErrorTypeOutOfRange,
	"Conversion Error":             duckdb.ErrorTypeConversion,
	"Error":                        duckdb.ErrorTypeUnknownType,
	"Decimal Error":                duckdb.ErrorTypeDecimal,
	"Mismatch Type Error":          duckdb.ErrorTypeMismatchType,
	"Divide by Zero Error":         duckdb.ErrorTypeDivideByZero,
	"Object Size Error":            duckdb.ErrorTypeObjectSize,
	"Invalid type Error":           duckdb.ErrorTypeInvalidType,
	"Serialization Error":          duckdb.ErrorTypeSerialization,
	"TransactionContext Error":     duckdb.ErrorTypeTransaction,
	"Not implemented Error":        duckdb.ErrorTypeNotImplemented,
	"Expression Error":             duckdb.ErrorTypeExpression,
	"Catalog Error":                duckdb.ErrorTypeCatalog,
	"Parser Error":                 duckdb.ErrorTypeParser,
	"Planner Error":                duckdb.ErrorTypePlanner,
	"Scheduler Error":              duckdb.ErrorTypeScheduler,
	"Executor Error":               duckdb.ErrorTypeExecutor,
	"Constraint Error":             duckdb.ErrorTypeConstraint,
	"Index Error":                  duckdb.ErrorTypeIndex,
	"Stat Error":                   duckdb.ErrorTypeStat,
	"Connection Error":             duckdb.ErrorTypeConnection,
	"Syntax Error":                 duckdb.ErrorTypeSyntax,
	"Settings Error":               duckdb.ErrorTypeSettings,
	"Binder Error":                 duckdb.ErrorTypeBinder,
	"Network Error":                duckdb.ErrorTypeNetwork,
	"Optimizer Error":              duckdb.ErrorTypeOptimizer,
	"NullPointer Error":            duckdb.ErrorTypeNullPointer,
	"IO Error":                     duckdb.ErrorTypeIO,
	"INTERRUPT Error":              duckdb.ErrorTypeInterrupt,
	"FATAL Error":                  duckdb.ErrorTypeFatal,
	"INTERNAL Error":               duckdb.ErrorTypeInternal,
	"Invalid Input Error":          duckdb.ErrorTypeInvalidInput,
	"Out of Memory Error":          duckdb.ErrorTypeOutOfMemory,
	"Permission Error":             duckdb.ErrorTypePermission,
	"Parameter Not Resolved Error": duckdb.ErrorTypeParameterNotResolved,
	"Parameter Not Allowed Error":  duckdb.ErrorTypeParameterNotAllowed,
	"Dependency Error":             duckdb.ErrorTypeDependency,
	"HTTP Error":                   duckdb.ErrorTypeHTTP,
	"Missing Extension Error":      duckdb.ErrorTypeMissingExtension,
	"Extension Autoloading Error":  duckdb.ErrorTypeAutoLoad,
	"Sequence Error":               duckdb.ErrorTypeSequence,
	"Invalid Configuration Error":  duckdb.ErrorTypeInvalidConfiguration,
}
