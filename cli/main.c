/*
 * sandctl: the command-line client of sandd. All of it lives in the sand_cli library so that the
 * tests can reach the formatting code; this file only hands argv over.
 */
#include "cli.h"

int main(int argc, char **argv)
{
    return sand_cli_main(argc, argv);
}
