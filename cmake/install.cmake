# `cmake --install`: the programs, the C client library with its headers and pkg-config
# file, and the docs, in the GNUInstallDirs places (bin, lib, include, share/doc/bitrack).
#
# The client library (libbitrack-client, shared) is the protocol codec and the DEALER
# client of proto/ with the status codes and byte buffer of common/: what a C program
# needs to talk to `bitrack serve`. Its headers keep their in-tree paths under
# include/bitrack-client, so a program includes "proto/client.h" the same way inside and
# outside the tree:
#   cc app.c $(pkg-config --cflags --libs bitrack-client)
include(GNUInstallDirs)

file(GLOB BR_CLIENT_SOURCES CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/proto/*.c)
add_library(bitrack_client SHARED ${BR_CLIENT_SOURCES} ${CMAKE_SOURCE_DIR}/common/status.c
  ${CMAKE_SOURCE_DIR}/common/buf.c)
set_target_properties(bitrack_client PROPERTIES
  OUTPUT_NAME bitrack-client VERSION ${PROJECT_VERSION} SOVERSION ${PROJECT_VERSION_MAJOR}
  C_VISIBILITY_PRESET default)
target_include_directories(bitrack_client PUBLIC
  $<BUILD_INTERFACE:${CMAKE_SOURCE_DIR}/include> $<BUILD_INTERFACE:${CMAKE_SOURCE_DIR}>)
target_compile_options(bitrack_client PRIVATE ${BR_WARNINGS})
target_link_libraries(bitrack_client PRIVATE PkgConfig::ZMQ PkgConfig::MSGPACK m)

install(TARGETS bitrack RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(PROGRAMS ${CMAKE_SOURCE_DIR}/launch/bitrack-launch DESTINATION ${CMAKE_INSTALL_BINDIR})
install(TARGETS bitrack_client
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR})
set(BR_CLIENT_INCLUDEDIR ${CMAKE_INSTALL_INCLUDEDIR}/bitrack-client)
install(FILES ${CMAKE_SOURCE_DIR}/include/bitrack/status.h ${CMAKE_SOURCE_DIR}/include/bitrack/buf.h
  DESTINATION ${BR_CLIENT_INCLUDEDIR}/bitrack)
install(FILES ${CMAKE_SOURCE_DIR}/proto/client.h ${CMAKE_SOURCE_DIR}/proto/proto.h
  DESTINATION ${BR_CLIENT_INCLUDEDIR}/proto)

# pkg-config: paths relative to the prefix the files were installed under
if(IS_ABSOLUTE "${CMAKE_INSTALL_LIBDIR}")
  set(BR_PC_LIBDIR "${CMAKE_INSTALL_LIBDIR}")
else()
  set(BR_PC_LIBDIR "\${prefix}/${CMAKE_INSTALL_LIBDIR}")
endif()
set(BR_PC_INCLUDEDIR "\${prefix}/${BR_CLIENT_INCLUDEDIR}")
set(BR_PC_PREFIX "@BR_PC_PREFIX@") # kept for the install step to fill in
configure_file(${CMAKE_SOURCE_DIR}/cmake/bitrack-client.pc.in
  ${CMAKE_BINARY_DIR}/bitrack-client.pc.in.configured @ONLY)
# the prefix is the one given at install time (cmake --install --prefix P)
install(CODE "
  file(READ \"${CMAKE_BINARY_DIR}/bitrack-client.pc.in.configured\" pc)
  string(REPLACE \"@BR_PC_PREFIX@\" \"\${CMAKE_INSTALL_PREFIX}\" pc \"\${pc}\")
  file(WRITE \"${CMAKE_BINARY_DIR}/bitrack-client.pc\" \"\${pc}\")
")
install(FILES ${CMAKE_BINARY_DIR}/bitrack-client.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)

install(FILES ${CMAKE_SOURCE_DIR}/README.md ${CMAKE_SOURCE_DIR}/proto/PROTOCOL.md
  DESTINATION ${CMAKE_INSTALL_DOCDIR})
file(GLOB BR_DOCS ${CMAKE_SOURCE_DIR}/docs/*.md ${CMAKE_SOURCE_DIR}/docs/*.svg)
install(FILES ${BR_DOCS} DESTINATION ${CMAKE_INSTALL_DOCDIR})
