/* shadowctl: the operator's command line for shadowd: the control-socket
 * commands (status, history, forecast, prewarm, switch, move, pause, resume,
 * and for libvirt domains libvirt, attach, detach) and the offline
 * `backtest`.  Called as virsh-shadow (a link to this program), it takes
 * virsh's word order instead: virsh-shadow DOMAIN DISK COMMAND. */
#include "ctl.h"

#include <locale.h>
#include <stdio.h>
#include <string.h>

static const CtlCommand commands[] = {
  { "status", ctl_cmd_status, FALSE },
  { "history", ctl_cmd_history, FALSE },
  { "forecast", ctl_cmd_forecast, FALSE },
  { "prewarm", ctl_cmd_disk_tier, FALSE },
  { "switch", ctl_cmd_disk_tier, TRUE },
  { "move", ctl_cmd_move, FALSE },
  { "pause", ctl_cmd_pause, TRUE },
  { "resume", ctl_cmd_pause, FALSE },
  { "libvirt", ctl_cmd_libvirt, FALSE },
  { "attach", ctl_cmd_attach, TRUE },
  { "detach", ctl_cmd_attach, FALSE },
  { "import", ctl_cmd_import, FALSE },
  { "backtest", ctl_cmd_backtest, FALSE },
  { "simulate", ctl_cmd_simulate, FALSE },
};

static void
usage (FILE *to)
{
  fprintf (to,
           "Usage: shadowctl [--control SOCKET] [--timeout MS] COMMAND [OPTIONS]\n"
           "\n"
           "Commands (through shadowd's control socket, default %s,\n"
           "or $SHADOWD_CONTROL):\n"
           "  status [DISK] [--json]         active tier, load, forecast, last decision\n"
           "  history [DISK] [--since 1h] [--resolution full|minute|auto] [--limit N]\n"
           "          [--decisions|--tiers] [--json]\n"
           "                                 samples, decisions or the tiers' allocation\n"
           "  forecast [DISK] [--steps N] [--json]\n"
           "                                 the load forecast with its interval\n"
           "  prewarm DISK TIER [--json]     make sure a tier is warm; how far it is\n"
           "  switch DISK TIER [--json]      switch now (once the child is synced)\n"
           "  move DISK TIER [--verify] [--verify-speed BYTES] [--keep-as PATH] [--no-wait]\n"
           "       [--json] | move DISK --abort\n"
           "                                 move for good: copy, verify, switch, retire\n"
           "                                 the other tiers (their images deleted)\n"
           "  pause [DISK] [--json]          keep deciding, stop acting\n"
           "  resume [DISK] [--json]         act again\n"
           "  import DISK FILE.csv --column NAME --interval-s S [--end T] [--json]\n"
           "                                 past load for the seasonal forecast\n"
           "\n"
           "libvirt domains (DISK is DOMAIN.TARGET above; virsh-shadow(1) has virsh's order):\n"
           "  libvirt [DISK] [--json]        the domain disks with shadow metadata\n"
           "  attach DOMAIN TARGET [--connect URI]\n"
           "                                 insert the shadow (again)\n"
           "  detach DOMAIN TARGET [--connect URI]\n"
           "                                 give the disk back to libvirt until attach\n"
           "\n"
           "Offline:\n"
           "  backtest FILE.csv --column NAME [--period N] [--horizon H] [--interval-s S]\n"
           "          [--json]\n"
           "      rolling-origin backtest of every forecaster on one CSV column\n"
           "  simulate FILE.csv --column NAME --interval-s S [--config FILE] [--disk NAME]\n"
           "          [--scale-peak IOPS] [--json]\n"
           "      the policy and its baselines replayed over one CSV column\n"
           "\n"
           "Run 'shadowctl COMMAND --help' for the options of a command.\n",
           "/run/shadowd/control.sock");
}

int
main (int argc, char **argv)
{
  const char *env = g_getenv ("SHADOWD_CONTROL");
  int i = 1;

  setlocale (LC_ALL, "");
  if (env && *env)
    ctl_control_path = env;
  {
    g_autofree char *base = g_path_get_basename (argv[0]);

    if (strcmp (base, "virsh-shadow") == 0)
      return ctl_virsh_main (argc, argv);
  }
  /* global options, before the command */
  while (i < argc && argv[i][0] == '-') {
    if (strcmp (argv[i], "--help") == 0 || strcmp (argv[i], "-h") == 0) {
      usage (stdout);
      return EXIT_SUCCESS;
    } else if (strcmp (argv[i], "--control") == 0 && i + 1 < argc) {
      ctl_control_path = argv[i + 1];
      i += 2;
    } else if (g_str_has_prefix (argv[i], "--control=")) {
      ctl_control_path = argv[i] + strlen ("--control=");
      i++;
    } else if (strcmp (argv[i], "--timeout") == 0 && i + 1 < argc) {
      guint64 v;

      if (!g_ascii_string_to_unsigned (argv[i + 1], 10, 1, 3600000, &v, NULL)) {
        g_printerr ("shadowctl: --timeout takes milliseconds\n");
        return EXIT_USAGE;
      }
      ctl_timeout_ms = (guint) v;
      i += 2;
    } else {
      g_printerr ("shadowctl: unknown option '%s'\n", argv[i]);
      usage (stderr);
      return EXIT_USAGE;
    }
  }
  if (i >= argc) {
    usage (stderr);
    return EXIT_USAGE;
  }
  argc -= i;
  argv += i;
  for (guint c = 0; c < G_N_ELEMENTS (commands); c++)
    if (strcmp (argv[0], commands[c].name) == 0)
      return commands[c].run (&commands[c], argc, argv);
  g_printerr ("shadowctl: unknown command '%s'\n", argv[0]);
  usage (stderr);
  return EXIT_USAGE;
}

