// Interactive Verilator harness for the accelerator top (module "accel"): the host byte
// stream `i` reads from stdin, `o` writes to stdout, so a host program talks to the RTL
// through two pipes as it would through a serial port (boards/host.py --sim).
// While the accelerator is quiet (no output, not busy, no input taken for 64 cycles) the
// harness flushes stdout and blocks on stdin (simulated time stands still); while it is
// busy it polls stdin every 1024 cycles. Exits when stdin closes.
// Verilator escapes the double underscore of the Amaranth port names (i__valid) as ___05F.
#include <poll.h>
#include <unistd.h>
#include <cstdio>
#include <vector>
#include "Vaccel.h"
#include "verilated.h"

static std::vector<unsigned char> in_buf, out_buf;
static size_t in_pos = 0;

static void flush_out() {
    size_t done = 0;
    while (done < out_buf.size()) {
        ssize_t n = write(1, out_buf.data() + done, out_buf.size() - done);
        if (n <= 0) _exit(1);            // the host went away
        done += n;
    }
    out_buf.clear();
}

// Read what stdin has (blocking: wait for at least one byte). False at end of input.
static bool fill(bool block) {
    if (!block) {
        struct pollfd p = {0, POLLIN, 0};
        if (poll(&p, 1, 0) <= 0) return true;
    }
    unsigned char buf[65536];
    ssize_t n = read(0, buf, sizeof buf);
    if (n <= 0) return false;
    in_buf.assign(buf, buf + n);
    in_pos = 0;
    return true;
}

int main(int argc, char** argv) {
    Verilated::commandArgs(argc, argv);
    Vaccel top;
    top.clk = 0; top.rst = 1; top.i___05Fvalid = 0; top.o___05Fready = 1;
    for (int i = 0; i < 4; i++) { top.clk = !top.clk; top.eval(); }
    top.rst = 0;

    unsigned long long cycle = 0, quiet = 0;
    for (;;) {
        bool have = in_pos < in_buf.size();
        if (!have) {
            if (quiet > 64) {
                flush_out();
                if (!fill(true)) break;
            } else if (cycle % 1024 == 0) {
                if (!out_buf.empty()) flush_out();
                if (!fill(false)) break;
            }
            have = in_pos < in_buf.size();
        }
        top.i___05Fvalid = have;
        if (have) top.i___05Fpayload = in_buf[in_pos];
        top.clk = 0; top.eval();
        bool take = have && top.i___05Fready;
        bool give = top.o___05Fvalid;
        if (give) out_buf.push_back(top.o___05Fpayload);
        top.clk = 1; top.eval();
        if (take) in_pos++;
        cycle++;
        quiet = (give || take || top.busy) ? 0 : quiet + 1;
    }
    flush_out();
    top.final();
    return 0;
}
