/* Test-only stand-in for Windows 10's bcryptprimitives.dll, which Wine 8
 * lacks: Rust's standard library imports ProcessPrng from it, so without it
 * no Rust program starts under Wine 8. Placed beside the test executable,
 * never shipped. ProcessPrng fills the buffer from the system generator
 * (RtlGenRandom, exported by advapi32 as SystemFunction036). */
#include <windows.h>

BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T length)
{
    while (length > 0) {
        ULONG n = length > 0x40000000 ? 0x40000000 : (ULONG)length;
        if (!SystemFunction036(data, n))
            return FALSE;
        data += n;
        length -= n;
    }
    return TRUE;
}
