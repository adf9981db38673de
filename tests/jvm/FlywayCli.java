// A small stand-in for Flyway's command line (flyway-commandline is not on Maven Central: one
// of its dependencies lives only on repo.gradle.org). It drives the real Flyway engine
// (flyway-core and the PostgreSQL/MySQL database modules) with the command line's own flag
// syntax, so tests exercise exactly what `flyway migrate` would do.
//
//   flyway [-X] [-q] [-outputType=json] -url=... -user=... [-password=...] -locations=filesystem:DIR
//          [-table=...] [-schemas=...] [-placeholders.K=V] ... COMMAND...
//
// Every `-key=value` becomes the configuration property `flyway.key` (as the real command line
// does), so any Flyway setting works, not only the ones tests use. FLYWAY_* environment
// variables (FLYWAY_PASSWORD keeps the password out of `ps`) are read as well; flags win.
// Commands: migrate info validate repair baseline. On failure: `ERROR: <Flyway's message>` on
// stderr and exit status 1, like the real command line.

import java.io.PrintStream;
import java.text.SimpleDateFormat;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.TimeZone;
import org.flywaydb.core.Flyway;
import org.flywaydb.core.api.MigrationInfo;
import org.flywaydb.core.api.MigrationInfoService;
import org.flywaydb.core.api.logging.Log;
import org.flywaydb.core.api.logging.LogCreator;
import org.flywaydb.core.api.logging.LogFactory;
import org.flywaydb.core.api.output.MigrateResult;
import org.flywaydb.core.api.output.RepairResult;
import org.flywaydb.core.internal.configuration.ConfigUtils;
import org.flywaydb.core.internal.info.MigrationInfoDumper;

public class FlywayCli {
  static boolean debug = false;
  static boolean quiet = false;
  // With -outputType=json stdout carries only the JSON document; the log goes to stderr.
  static PrintStream out = System.out;

  // The command line's console log: info plain on stdout, warnings and errors prefixed.
  static final class ConsoleLog implements Log {
    public void debug(String m) { if (debug) out.println("DEBUG: " + m); }
    public void info(String m) { if (!quiet) out.println(m); }
    public void warn(String m) { out.println("WARNING: " + m); }
    public void error(String m) { System.err.println("ERROR: " + m); }
    public void error(String m, Exception e) { System.err.println("ERROR: " + m); if (debug) e.printStackTrace(); }
    public void notice(String m) { if (!quiet) out.println(m); }
  }

  public static void main(String[] args) {
    Map<String, String> props = new HashMap<>(ConfigUtils.environmentVariablesToPropertyMap());
    List<String> commands = new ArrayList<>();
    boolean json = false;
    for (String a : args) {
      if (a.equals("-X")) debug = true;
      else if (a.equals("-q")) quiet = true;
      else if (a.startsWith("-") && a.contains("=")) {
        String key = a.substring(1, a.indexOf('='));
        String value = a.substring(a.indexOf('=') + 1);
        if (key.equals("outputType")) json = value.equalsIgnoreCase("json");
        else props.put("flyway." + key, value);
      } else if (a.startsWith("-")) {
        System.err.println("ERROR: Invalid argument: " + a);
        System.exit(1);
      } else commands.add(a);
    }
    if (commands.isEmpty()) {
      System.err.println("ERROR: no command given (migrate, info, validate, repair, baseline)");
      System.exit(1);
    }
    if (json) out = System.err;
    LogCreator creator = c -> new ConsoleLog();
    LogFactory.setLogCreator(creator);
    LogFactory.setFallbackLogCreator(creator);
    // "console" is the command line's logger; the fallback creator is what Flyway uses for it.
    props.putIfAbsent("flyway.loggers", "console");
    try {
      Flyway flyway = Flyway.configure().configuration(props).load();
      for (String command : commands) run(flyway, command, json);
    } catch (Exception e) {
      String m = e.getMessage() == null ? e.toString() : e.getMessage();
      System.err.println("ERROR: " + m);
      if (debug) e.printStackTrace();
      System.exit(1);
    }
  }

  static void run(Flyway flyway, String command, boolean json) {
    switch (command) {
      case "migrate": {
        MigrateResult r = flyway.migrate();
        if (json) System.out.println("{\"migrationsExecuted\":" + r.migrationsExecuted
            + ",\"targetSchemaVersion\":" + str(r.targetSchemaVersion) + "}");
        break;
      }
      case "info": {
        MigrationInfoService info = flyway.info();
        MigrationInfo[] all = info.all();
        if (json) printJson(all);
        else {
          System.out.println("Schema version: " + versionOf(info.current()));
          System.out.println();
          System.out.println(MigrationInfoDumper.dumpToAsciiTable(all));
        }
        break;
      }
      case "validate": flyway.validate(); break;
      case "repair": {
        RepairResult r = flyway.repair();
        if (json) System.out.println("{\"repairActions\":" + strings(r.repairActions) + "}");
        break;
      }
      case "baseline": flyway.baseline(); break;
      default: throw new IllegalArgumentException("Invalid command: " + command
          + " (this runner knows migrate, info, validate, repair, baseline)");
    }
  }

  static String versionOf(MigrationInfo i) {
    return i == null || i.getVersion() == null ? "<< Empty Schema >>" : i.getVersion().toString();
  }

  // Not Flyway's own JSON shape: the fields of its info table plus both checksums, which the
  // table does not print and interop tests compare.
  static void printJson(MigrationInfo[] all) {
    SimpleDateFormat utc = new SimpleDateFormat("yyyy-MM-dd'T'HH:mm:ss.SSS'Z'");
    utc.setTimeZone(TimeZone.getTimeZone("UTC"));
    StringBuilder b = new StringBuilder("{\"migrations\":[");
    for (int n = 0; n < all.length; n++) {
      MigrationInfo i = all[n];
      if (n > 0) b.append(',');
      b.append("{\"version\":").append(str(i.getVersion() == null ? null : i.getVersion().toString()))
          .append(",\"description\":").append(str(i.getDescription()))
          .append(",\"type\":").append(str(i.getType() == null ? null : i.getType().name()))
          .append(",\"script\":").append(str(i.getScript()))
          .append(",\"state\":").append(str(i.getState().getDisplayName()))
          .append(",\"checksum\":").append(i.getChecksum())
          .append(",\"resolvedChecksum\":").append(i.getResolvedChecksum())
          .append(",\"appliedChecksum\":").append(i.getAppliedChecksum())
          .append(",\"installedRank\":").append(i.getInstalledRank())
          .append(",\"installedBy\":").append(str(i.getInstalledBy()))
          .append(",\"installedOnUTC\":").append(str(i.getInstalledOn() == null ? null : utc.format(i.getInstalledOn())))
          .append(",\"executionTime\":").append(i.getExecutionTime())
          .append('}');
    }
    System.out.println(b.append("]}"));
  }

  static String strings(List<String> l) {
    StringBuilder b = new StringBuilder("[");
    for (int n = 0; l != null && n < l.size(); n++) b.append(n > 0 ? "," : "").append(str(l.get(n)));
    return b.append(']').toString();
  }

  static String str(String s) {
    if (s == null) return "null";
    StringBuilder b = new StringBuilder("\"");
    for (char c : s.toCharArray()) {
      if (c == '"' || c == '\\') b.append('\\').append(c);
      else if (c < 0x20) b.append(String.format("\\u%04x", (int) c));
      else b.append(c);
    }
    return b.append('"').toString();
  }
}
