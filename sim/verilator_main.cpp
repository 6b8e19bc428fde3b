// Free-running Verilator harness for the accelerator top (module "accel").
// Feeds the bytes of a stimulus file into the host stream `i` as fast as the bridge takes
// them, writes every byte the accelerator sends on `o` to a response file, and logs
// changes of `chunk_busy` as "cycle mask" lines to a trace file. Stops when the stimulus
// is consumed and `o` has been idle for 64 cycles, or after max_cycles.
// Verilator escapes the double underscore of the Amaranth port names (i__valid) as ___05F.
// usage: accel_sim STIMULUS RESPONSE TRACE MAX_CYCLES
#include <cstdio>
#include <cstdlib>
#include <vector>
#include "Vaccel.h"
#include "verilated.h"

int main(int argc, char** argv) {
    if (argc != 5) {
        std::fprintf(stderr, "usage: %s STIMULUS RESPONSE TRACE MAX_CYCLES\n", argv[0]);
        return 2;
    }
    std::FILE* in = std::fopen(argv[1], "rb");
    std::FILE* out = std::fopen(argv[2], "wb");
    std::FILE* trace = std::fopen(argv[3], "w");
    if (!in || !out || !trace) { std::perror("accel_sim"); return 2; }
    std::vector<unsigned char> stim;
    for (int c; (c = std::fgetc(in)) != EOF;) stim.push_back((unsigned char)c);
    unsigned long long max_cycles = std::strtoull(argv[4], nullptr, 10);

    Verilated::commandArgs(argc, argv);
    Vaccel top;
    top.clk = 0; top.rst = 1; top.i___05Fvalid = 0; top.o___05Fready = 1;
    for (int i = 0; i < 4; i++) { top.clk = !top.clk; top.eval(); }
    top.rst = 0;

    size_t pos = 0;
    unsigned long long cycle = 0, idle = 0;
    int last_busy = -1;
    while (cycle < max_cycles) {
        top.i___05Fvalid = pos < stim.size();
        if (pos < stim.size()) top.i___05Fpayload = stim[pos];
        top.clk = 0; top.eval();
        bool take = top.i___05Fvalid && top.i___05Fready;
        bool give = top.o___05Fvalid && top.o___05Fready;
        if (give) std::fputc(top.o___05Fpayload, out);
        top.clk = 1; top.eval();
        if (take) pos++;
        if ((int)top.chunk_busy != last_busy) {
            last_busy = top.chunk_busy;
            std::fprintf(trace, "%llu %d\n", cycle, last_busy);
        }
        cycle++;
        idle = (give || pos < stim.size() || top.busy) ? 0 : idle + 1;
        if (idle > 64) break;
    }
    std::fclose(out); std::fclose(trace);
    top.final();
    if (cycle >= max_cycles) { std::fprintf(stderr, "accel_sim: stopped at %llu cycles\n", cycle); return 1; }
    return 0;
}
