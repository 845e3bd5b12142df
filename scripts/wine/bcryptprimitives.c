/*
 * A stand-in for Windows' bcryptprimitives.dll, for running Windows builds under Wine in the
 * tests only (scripts/test-windows builds it next to the executables; it is never shipped).
 *
 * Rust's standard library on Windows gets its random bytes (HashMap seeds, and everything
 * that asks std for randomness) from ProcessPrng in bcryptprimitives.dll. Debian's Wine 8.0
 * has no such DLL, so every Rust program fails to start. This one exports ProcessPrng over
 * RtlGenRandom (advapi32's SystemFunction036), which Wine has.
 */
#include <windows.h>

BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T length)
{
    while (length > 0) {
        /* RtlGenRandom takes a 32-bit length. */
        ULONG chunk = length > 0x7fffffff ? 0x7fffffff : (ULONG)length;
        if (!SystemFunction036(data, chunk))
            return FALSE;
        data += chunk;
        length -= chunk;
    }
    return TRUE;
}
