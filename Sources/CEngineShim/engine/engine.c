/*
 * The ENGINE itself: identity, control commands, life cycle. Each method
 * lives in a file of its own (rsa_method.c, ec_key_method.c,
 * ecx_pkey_method.c); configuration and statistics
 * live in Swift and are reached by name through the contract header.
 */
#define _GNU_SOURCE
#include "ec_key_method.h"
#include "ecx_pkey_method.h"
#include "rsa_method.h"
#include "swiftasync_shim.h"

#include <dlfcn.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <openssl/engine.h>
#include <openssl/err.h>

static const char engine_id[] = "swiftasync";
static const char engine_name[] = "swiftasync: RSA, EC, X25519 and X448 on a Swift worker pool, async via wait fds and callbacks";

enum {
    CMD_THREADS = ENGINE_CMD_BASE,
    CMD_QUEUE_DEPTH,
    CMD_SYNC_OFFLOAD,
    CMD_NOTIFY_BATCH,
    CMD_NOTIFY_DELAY_USEC,
    CMD_IDLE_SPIN_USEC,
    CMD_CALLER_RUNS_DEPTH,
    CMD_WORKER_DELAY_USEC,
    CMD_MULTIBUFFER,
    CMD_MULTIBUFFER_MIN_FILL,
    CMD_STATS,
    CMD_STATS_FILE,
    CMD_STATS_DIR,
};

static const ENGINE_CMD_DEFN commands[] = {
    { CMD_THREADS, "THREADS",
      "Worker threads (0: one per online CPU; default 0; env SWIFTASYNC_THREADS)",
      ENGINE_CMD_FLAG_NUMERIC },
    { CMD_QUEUE_DEPTH, "QUEUE_DEPTH",
      "Operations that may wait for a worker before callers are told EAGAIN (default 1024; env SWIFTASYNC_QUEUE_DEPTH)",
      ENGINE_CMD_FLAG_NUMERIC },
    { CMD_SYNC_OFFLOAD, "SYNC_OFFLOAD",
      "Outside async jobs: 0 computes on the calling thread (default), 1 offloads and waits (env SWIFTASYNC_SYNC_OFFLOAD)",
      ENGINE_CMD_FLAG_NUMERIC },
    { CMD_NOTIFY_BATCH, "NOTIFY_BATCH",
      "While work is queued, a worker wakes up to this many finished jobs at once (default 64; 1 wakes each at once; env SWIFTASYNC_NOTIFY_BATCH)",
      ENGINE_CMD_FLAG_NUMERIC },
    { CMD_NOTIFY_DELAY_USEC, "NOTIFY_DELAY_USEC",
      "...but holds a finished job back at most this many microseconds (default 1000; env SWIFTASYNC_NOTIFY_DELAY_USEC)",
      ENGINE_CMD_FLAG_NUMERIC },
    { CMD_IDLE_SPIN_USEC, "IDLE_SPIN_USEC",
      "Microseconds an idle worker watches for new work before it sleeps (default 50; 0 never spins; env SWIFTASYNC_IDLE_SPIN_USEC)",
      ENGINE_CMD_FLAG_NUMERIC },
    { CMD_CALLER_RUNS_DEPTH, "CALLER_RUNS_DEPTH",
      "With every worker busy and this many operations queued, one no 8-lane call would take is computed by its caller (default: four per worker; 0 never; env SWIFTASYNC_CALLER_RUNS_DEPTH)",
      ENGINE_CMD_FLAG_NUMERIC },
    { CMD_WORKER_DELAY_USEC, "WORKER_DELAY_USEC",
      "Microseconds a worker waits before each operation, as a hardware accelerator would (testing; default 0; env SWIFTASYNC_WORKER_DELAY_USEC)",
      ENGINE_CMD_FLAG_NUMERIC },
    { CMD_MULTIBUFFER, "MULTIBUFFER",
      "1: like operations queued together share 8-lane AVX-512 IFMA calls where the CPU has them (default); 0: every operation scalar (env SWIFTASYNC_MULTIBUFFER)",
      ENGINE_CMD_FLAG_NUMERIC },
    { CMD_MULTIBUFFER_MIN_FILL, "MULTIBUFFER_MIN_FILL",
      "Fewest queued like operations for one 8-lane call (1-8; default 0: the crossover measured per kind; env SWIFTASYNC_MULTIBUFFER_MIN_FILL)",
      ENGINE_CMD_FLAG_NUMERIC },
    { CMD_STATS, "STATS",
      "Print per-algorithm counters (offloaded, completed, inline, retried, failed, computed in 8-lane calls and those calls) and the pool's state",
      ENGINE_CMD_FLAG_NO_INPUT },
    { CMD_STATS_FILE, "STATS_FILE",
      "Append the counters to this file when the engine finishes (env SWIFTASYNC_STATS_FILE)",
      ENGINE_CMD_FLAG_STRING },
    { CMD_STATS_DIR, "STATS_DIR",
      "Directory where live counters are published as <pid>.stats for engine-loader stats (default /dev/shm/swiftasync; empty: none; env SWIFTASYNC_STATS_DIR)",
      ENGINE_CMD_FLAG_STRING },
    { 0, NULL, NULL, 0 }
};

static const ENGINE_CMD_DEFN *command_named(int number)
{
    const ENGINE_CMD_DEFN *command;
    for (command = commands; command->cmd_name != NULL; command++)
        if ((int)command->cmd_num == number)
            return command;
    return NULL;
}

/* STATS: to stdout from the command line, or into (buffer, capacity). */
static int write_stats(long capacity, void *buffer)
{
    char text[4096];

    if (buffer != NULL) {
        if (capacity <= 0)
            return 0;
        return sa_stats_format(buffer, (size_t)capacity) < (size_t)capacity;
    }
    sa_stats_format(text, sizeof(text));
    fputs(text, stdout);
    fflush(stdout);
    return 1;
}

static int engine_ctrl(ENGINE *engine, int number, long i, void *p, void (*f)(void))
{
    const ENGINE_CMD_DEFN *command = command_named(number);
    int accepted;

    (void)engine; (void)f;
    if (command == NULL) {
        ERR_raise(ERR_LIB_ENGINE, ENGINE_R_CTRL_COMMAND_NOT_IMPLEMENTED);
        return 0;
    }
    if (number == CMD_STATS)
        return write_stats(i, p);
    if (command->cmd_flags & ENGINE_CMD_FLAG_STRING)
        accepted = p != NULL && sa_config_set_string(command->cmd_name, p);
    else
        accepted = sa_config_set(command->cmd_name, i);
    if (!accepted)
        ERR_raise_data(ERR_LIB_ENGINE, ENGINE_R_INVALID_ARGUMENT,
                       "swiftasync %s: invalid value", command->cmd_name);
    return accepted;
}

static int engine_init(ENGINE *engine)
{
    (void)engine;
    sa_engine_did_init();
    return 1;
}

static int engine_finish(ENGINE *engine)
{
    (void)engine;
    sa_engine_did_finish();
    return 1;
}

/*
 * ENGINE_by_id("/abs/path/swiftasync.so"), which `-engine /abs/path` and
 * nginx's ssl_engine use, binds with the path as the id: accept the path of
 * this very file.
 */
static int names_this_file(const char *id)
{
    Dl_info self;
    char wanted[PATH_MAX], mine[PATH_MAX];

    return strchr(id, '/') != NULL
        && dladdr((void *)names_this_file, &self) != 0 && self.dli_fname != NULL
        && realpath(id, wanted) != NULL && realpath(self.dli_fname, mine) != NULL
        && strcmp(wanted, mine) == 0;
}

static int bind_swiftasync(ENGINE *engine, const char *id)
{
    if (id != NULL && strcmp(id, engine_id) != 0 && !names_this_file(id))
        return 0;
    return ENGINE_set_id(engine, engine_id)
        && ENGINE_set_name(engine, engine_name)
        && ENGINE_set_init_function(engine, engine_init)
        && ENGINE_set_finish_function(engine, engine_finish)
        && ENGINE_set_ctrl_function(engine, engine_ctrl)
        && ENGINE_set_cmd_defns(engine, commands)
        && sa_rsa_bind(engine)
        && sa_ec_bind(engine)
        && sa_ecx_bind(engine);
}

IMPLEMENT_DYNAMIC_BIND_FN(bind_swiftasync)
IMPLEMENT_DYNAMIC_CHECK_FN()
