/*
 * The demo's network commands (netfront + the minimal IP stack).  Each is
 * a real, non-inlined function (gdb can break on it).
 */
#ifndef NETCMDS_H
#define NETCMDS_H

void cmd_ip(const char *args);
void cmd_ping(const char *args);
void cmd_udp(const char *args);
void cmd_net(const char *args);

/* Connect the vifs present (and later attached); addresses from the back
 * end's "ip" key or ip= on the command line. */
void netcmds_init(void);

#endif /* NETCMDS_H */
