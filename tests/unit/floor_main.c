/* Links one floor (lib/, index/ or cache/) with every object it holds: a call
 * from it into a floor above it (src/) is an undefined symbol, and the build
 * fails. See "the floors" in the top CMakeLists.txt. */
int main(void) { return 0; }
