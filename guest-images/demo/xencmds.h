/*
 * The demo's inter-domain commands: XenStore, event channels, grants.
 * Each is a real, non-inlined function (gdb can break on it).
 */
#ifndef XENCMDS_H
#define XENCMDS_H

void cmd_xs_read(const char *args);
void cmd_xs_write(const char *args);
void cmd_xs_rm(const char *args);
void cmd_xs_ls(const char *args);
void cmd_xs_watch(const char *args);
void cmd_xs_tx(const char *args);
void cmd_xs_bench(const char *args);
void cmd_evtchn_listen(const char *args);
void cmd_evtchn_ping(const char *args);
void cmd_gnt_share(const char *args);
void cmd_gnt_show(const char *args);
void cmd_gnt_end(const char *args);
void cmd_gnt_copy(const char *args);
void cmd_gnt_put(const char *args);

/* Start watching control/shutdown and control/sysrq. */
void xencmds_init(void);

#endif /* XENCMDS_H */
